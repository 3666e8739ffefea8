//! The `shell_hyperfine` adapter: hyperfine's `--export-json` file. Each command is a
//! benchmark named by its `command` (the command line, or its `--command-name`); its
//! `mean` (seconds) becomes `latency` in ns with `mean ± stddev` as bounds (no bounds
//! for a single run, whose `stddev` is null). Pure.

use serde::Deserialize;

use super::units::TimeUnit;
use super::{Adapter, AdapterError, AdapterResults, ResultsBuilder, from_json};

const ADAPTER: Adapter = Adapter::ShellHyperfine;
const EXPECTED: &str = "a hyperfine --export-json document with `results`";

#[derive(Deserialize)]
struct Document {
    results: Vec<Command>,
}

#[derive(Deserialize)]
struct Command {
    command: String,
    mean: f64,
    stddev: Option<f64>,
}

pub(super) fn parse(text: &str) -> Result<AdapterResults, AdapterError> {
    let document: Document = from_json(ADAPTER, text)?;
    let mut results = ResultsBuilder::new(ADAPTER);
    for command in &document.results {
        results.insert_latency_spread(
            &command.command,
            command.mean,
            command.stddev,
            TimeUnit::SECONDS,
        )?;
    }
    results.finish(EXPECTED)
}

#[cfg(test)]
// Numbers are copied verbatim from the fixtures, digits the harness printed included.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::adapter::tests::{assert_metric, chain, fixture};

    #[test]
    fn parses_commands_with_spaces() {
        let results = parse(&fixture("shell_hyperfine/commands.json")).unwrap();
        let names: Vec<_> = results.benchmarks().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["echo hello world", "sleep 0.01"]);
        // "command": "sleep 0.01", "mean": 0.01740863998, "stddev": 0.0034632333723101164
        let (mean, stddev) = (0.01740863998e9, 0.0034632333723101164e9);
        assert_metric(
            &results,
            "sleep 0.01",
            "latency",
            mean,
            Some(mean - stddev),
            Some(mean + stddev),
        );
    }

    #[test]
    fn a_single_run_has_no_bounds() {
        let results = parse(&fixture("shell_hyperfine/one-run.json")).unwrap();
        // "command": "named: sleep", "mean": 0.026030402260000002, "stddev": null
        assert_metric(
            &results,
            "named: sleep",
            "latency",
            0.026030402260000002e9,
            None,
            None,
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        let cases = [
            (
                r#"{"results": {}}"#,
                "invalid type: map, expected a sequence",
            ),
            (
                r#"{"results": []}"#,
                "shell_hyperfine: no benchmark results found",
            ),
            (
                r#"{"results": [{"command": "x", "mean": "fast"}]}"#,
                "invalid type: string \"fast\", expected f64",
            ),
            (
                r#"{"results": [{"command": "", "mean": 1}]}"#,
                "benchmark name must not be empty",
            ),
        ];
        for (text, expected) in cases {
            let message = chain(&parse(text).unwrap_err());
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
