//! The `json` adapter: the Bencher Metric Format read as is,
//! `{"benchmark": {"measure-slug": {"value": 1.0, "lower_value": 0.9, "upper_value": 1.1}}}`.
//! Any measure slug is allowed (custom measures are created on the fly); values are in
//! the measure's own units, so nothing is converted. A key repeated within one object is
//! an error, where a plain JSON map would silently keep the last. Pure.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::{Adapter, AdapterError, AdapterResults, ResultsBuilder, excerpt, from_json};

const ADAPTER: Adapter = Adapter::Json;
const EXPECTED: &str = r#"a BMF object such as {"my-benchmark": {"latency": {"value": 12.5}}}"#;

pub(super) fn parse(text: &str) -> Result<AdapterResults, AdapterError> {
    let document: Entries<Entries<Entries<Value>>> = from_json(ADAPTER, text)?;
    let mut results = ResultsBuilder::new(ADAPTER);
    for (benchmark, measures) in document.0 {
        for (measure, metric) in measures.0 {
            let (value, lower, upper) =
                metric_fields(&metric).map_err(|problem| AdapterError::Benchmark {
                    adapter: ADAPTER,
                    benchmark: excerpt(&benchmark),
                    problem: format!("measure `{}`: {problem}", excerpt(&measure)),
                })?;
            results.insert(&benchmark, &measure, value, lower, upper)?;
        }
    }
    results.finish(EXPECTED)
}

type Fields = (f64, Option<f64>, Option<f64>);

/// The numbers of one BMF metric object, or what is wrong with it.
fn metric_fields(metric: &Entries<Value>) -> Result<Fields, String> {
    let mut value = None;
    let mut lower = None;
    let mut upper = None;
    for (field, number) in &metric.0 {
        let slot = match field.as_str() {
            "value" => &mut value,
            "lower_value" => &mut lower,
            "upper_value" => &mut upper,
            other => {
                return Err(format!(
                    "unknown field `{}`; expected `value`, `lower_value` or `upper_value`",
                    excerpt(other)
                ));
            }
        };
        *slot = match number {
            // Explicit nulls for the optional bounds are what some serializers write.
            Value::Null if field != "value" => None,
            Value::Number(number) => number.as_f64(),
            other => {
                return Err(format!("`{field}` must be a number, got {}", kind(other)));
            }
        };
    }
    let value = value.ok_or("missing `value`")?;
    Ok((value, lower, upper))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON object's entries in document order, duplicates refused.
struct Entries<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Entries<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

struct EntriesVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for EntriesVisitor<T> {
    type Value = Entries<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(String, T)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.iter().any(|(seen, _)| *seen == key) {
                return Err(serde::de::Error::custom(format!(
                    "key `{}` appears twice in one object",
                    excerpt(&key)
                )));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Entries(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        crate::adapter::tests::chain(&parse(text).unwrap_err())
    }

    #[test]
    fn reads_bmf_with_custom_measures_and_bounds() {
        let results = parse(
            r#"{
                "parse/large file": {
                    "latency": {"value": 1500.5, "lower_value": 1400, "upper_value": 1600.25},
                    "throughput": {"value": 666.4}
                },
                "binary-bencher-ignore": {"file-size": {"value": 1048576, "lower_value": null}}
            }"#,
        )
        .unwrap();
        assert_eq!(results.len(), 2);
        let latency = results.get("parse/large file", "latency").unwrap();
        assert_eq!(
            (
                latency.value(),
                latency.lower_value(),
                latency.upper_value()
            ),
            (1500.5, Some(1400.0), Some(1600.25))
        );
        let throughput = results.get("parse/large file", "throughput").unwrap();
        assert_eq!(
            (throughput.value(), throughput.lower_value()),
            (666.4, None)
        );
        // The ignore suffix is kept: thresholds decide what it means.
        let size = results.get("binary-bencher-ignore", "file-size").unwrap();
        assert_eq!(size.value(), 1048576.0);
    }

    #[test]
    fn round_trips_through_serialization() {
        let text = r#"{"a":{"latency":{"value":1.0,"lower_value":0.5}},"b":{"x":{"value":-2.0}}}"#;
        let results = parse(text).unwrap();
        assert_eq!(serde_json::to_string(&results).unwrap(), text);
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases = [
            ("", "not the JSON this adapter reads"),
            ("[1, 2]", "expected a JSON object"),
            ("{}", "no benchmark results found"),
            (r#"{"b": []}"#, "expected a JSON object"),
            (
                r#"{"b": {"latency": 5}}"#,
                "invalid type: integer `5`, expected a JSON object",
            ),
            (
                r#"{"b": {"latency": {}}}"#,
                "benchmark `b`: measure `latency`: missing `value`",
            ),
            (
                r#"{"b": {"latency": {"value": "5"}}}"#,
                "`value` must be a number, got a string",
            ),
            (
                r#"{"b": {"latency": {"value": null}}}"#,
                "`value` must be a number, got null",
            ),
            (
                r#"{"b": {"latency": {"value": 5, "lower": 4}}}"#,
                "unknown field `lower`; expected `value`, `lower_value` or `upper_value`",
            ),
            (
                r#"{"b": {"latency": {"value": 5, "lower_value": 6}}}"#,
                "`lower_value` (6) must not be above `value` (5)",
            ),
            (
                r#"{"b": {"latency": {"value": 5, "upper_value": 4}}}"#,
                "`upper_value` (4) must not be below `value` (5)",
            ),
            (
                r#"{"b": {"latency": {"value": 1e400}}}"#,
                "number out of range",
            ),
            (
                r#"{"b": {"Latency": {"value": 1}}}"#,
                "invalid measure `Latency`",
            ),
            (
                r#"{"": {"latency": {"value": 1}}}"#,
                "benchmark name must not be empty",
            ),
            (
                r#"{"a\tb": {"latency": {"value": 1}}}"#,
                "must not contain control characters",
            ),
            (
                r#"{"b": {"latency": {"value": 1}}, "b": {"latency": {"value": 2}}}"#,
                "key `b` appears twice in one object",
            ),
            (
                r#"{"b": {"latency": {"value": 1}, "latency": {"value": 2}}}"#,
                "key `latency` appears twice",
            ),
            (
                r#"{"b": {"latency": {"value": 1, "value": 2}}}"#,
                "key `value` appears twice",
            ),
        ];
        for (text, expected) in cases {
            let message = err(text);
            assert!(message.contains(expected), "{text}: {message}");
        }
        let long = format!(
            r#"{{"{}": {{"latency": {{"value": 1}}}}}}"#,
            "x".repeat(1025)
        );
        assert!(err(&long).contains("at most 1024 characters, got 1025"));
    }
}
