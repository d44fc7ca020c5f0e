//! Rendering of admin command results: aligned tables and `key  value` blocks for `--output
//! text`, pretty JSON for `--output json`, and errors in either form. Hand-rolled: column
//! widths are counted in characters, which is right for the ids, names and times shown here.

use leasehold_client::ClientError;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::connect::OutputFormat;

/// Rows under a header, each column as wide as its widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key  value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let line = format!("{key:<width$}  {value}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A time as RFC 3339, to the second.
pub fn time(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| at.to_string())
}

pub fn opt_time(at: Option<OffsetDateTime>) -> String {
    at.map(time).unwrap_or_else(|| "-".to_owned())
}

pub fn opt<T: ToString>(value: Option<T>) -> String {
    value
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot encode the answer as JSON: {e}"),
    }
}

/// Prints a failed request on stderr: `error: 409 no_seat_available: message` in text, the
/// server's error body (plus `status`) in JSON.
pub fn print_error(format: OutputFormat, url: &str, err: &ClientError) {
    match format {
        OutputFormat::Text => match err {
            ClientError::Transport(_) => {
                eprintln!("error: cannot reach the server at {url}: {err}")
            }
            _ => eprintln!("error: {err}"),
        },
        OutputFormat::Json => {
            let (status, code, message) = match err {
                ClientError::Api {
                    status,
                    code,
                    message,
                    ..
                } => (Some(*status), code.as_str().to_owned(), message.clone()),
                ClientError::Transport(m) => (None, "unreachable".to_owned(), m.clone()),
                ClientError::Decode(m) => (None, "decode".to_owned(), m.clone()),
                ClientError::LeaseInvalid(m) => (None, "lease_invalid".to_owned(), m.clone()),
                ClientError::LeaseRevoked(m) => (None, "lease_revoked".to_owned(), m.clone()),
                ClientError::Config(m) => (None, "config".to_owned(), m.clone()),
            };
            let mut error = serde_json::json!({"code": code, "message": message});
            if let Some(status) = status {
                error["status"] = status.into();
            }
            if let Some(reason) = err.end_reason() {
                error["reason"] = reason.as_str().into();
            }
            eprintln!("{}", serde_json::json!({ "error": error }));
        }
    }
}

/// Prints a failure that happened before any request (configuration, usage).
pub fn print_failure(format: OutputFormat, message: &str) {
    match format {
        OutputFormat::Text => eprintln!("error: {message}"),
        OutputFormat::Json => eprintln!(
            "{}",
            serde_json::json!({"error": {"code": "config", "message": message}})
        ),
    }
}

/// `yes` or `no`.
pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// The text, or `-` when it is empty.
pub fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// The items joined with `, `, or `-` when there are none.
pub fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let mut table = Table::new(&["ID", "USER", "X"]);
        table.row(vec!["a".into(), "bobby".into(), "".into()]);
        table.row(vec!["long-id".into(), "al".into(), "1".into()]);
        assert_eq!(
            table.render(),
            "ID       USER   X\na        bobby\nlong-id  al     1\n"
        );
    }

    #[test]
    fn key_values_align_values() {
        assert_eq!(
            key_values(&[("id", "1".into()), ("name", "Acme".into())]),
            "id    1\nname  Acme\n"
        );
    }

    #[test]
    fn times_are_shown_to_the_second() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_123_456_789).unwrap();
        assert_eq!(time(at), "2027-01-15T08:00:00Z");
    }
}
