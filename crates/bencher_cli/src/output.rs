//! How results reach the terminal: `--format`, pretty JSON, tables, key/value views,
//! list footers, timestamps, and the wording around secrets shown once.

use std::io::{self, Write};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

/// What stdout carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Tables and sentences for people.
    #[default]
    Human,
    /// The server's JSON, pretty-printed, and nothing else, for scripts.
    Json,
}

/// Writes `text` and a newline to stdout.
///
/// A reader that went away (`bencher spec list | head -1`) is not an error worth
/// reporting: it already has what it wanted.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("could not write to stdout"),
    }
}

/// Pretty JSON of a body, as the server sent it.
pub fn emit_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(value).context("could not encode the JSON output")?;
    emit(&json)
}

/// A table with a header row, laid out to the terminal width when there is one.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    table
}

/// One page of a list: the items as JSON, or a table (when not empty) and a footer.
pub fn emit_page<T: Serialize>(
    format: Format,
    page: &bencher_client::Page<T>,
    table: impl FnOnce(&[T]) -> Table,
    singular: &str,
    plural: &str,
) -> anyhow::Result<()> {
    match format {
        Format::Json => emit_json(&page.items),
        Format::Human => {
            if !page.items.is_empty() {
                emit(&table(&page.items).to_string())?;
            }
            emit(&footer(page.items.len(), page.total, singular, plural))
        }
    }
}

/// `3 of 7 runners`, or `No runners.` when nothing matched.
pub fn footer(shown: usize, total: u64, singular: &str, plural: &str) -> String {
    if total == 0 {
        return format!("No {plural}.");
    }
    let noun = if total == 1 { singular } else { plural };
    format!("{shown} of {total} {noun}")
}

/// Aligned `key: value` lines for one object.
pub fn view(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(key, value)| format!("{:<width$} {value}", format!("{key}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A timestamp, or `placeholder` when there is none.
pub fn time_or(at: Option<&DateTime<Utc>>, placeholder: &str) -> String {
    at.map_or_else(|| placeholder.to_owned(), time)
}

pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// The notice printed under every freshly issued secret: the server keeps only a hash,
/// so nobody can show it again.
pub fn shown_once(what: &str) -> String {
    format!(
        "This {what} is shown only once: the server stores only its hash.\n\
         Store it securely now (for example in a secret manager); if it is lost, rotate or replace it."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footers() {
        assert_eq!(footer(3, 7, "runner", "runners"), "3 of 7 runners");
        assert_eq!(footer(1, 1, "spec", "specs"), "1 of 1 spec");
        assert_eq!(footer(0, 0, "token", "tokens"), "No tokens.");
    }

    #[test]
    fn views_align() {
        let text = view(&[
            ("name", "My Runner".to_owned()),
            ("last seen", "never".to_owned()),
        ]);
        assert_eq!(text, "name:      My Runner\nlast seen: never");
    }

    #[test]
    fn times_are_rfc3339() {
        let at = DateTime::parse_from_rfc3339("2025-03-04T05:06:07.123Z")
            .expect("valid timestamp")
            .with_timezone(&Utc);
        assert_eq!(time(&at), "2025-03-04T05:06:07Z");
        assert_eq!(time_or(None, "never"), "never");
    }
}
