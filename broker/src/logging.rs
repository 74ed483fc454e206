//! The binary's log: `tracing` events to standard error, as text for people or JSON for collectors.
//!
//! Log lines carry text that clients choose — client ids, usernames, topics, authentication
//! methods — and a newline in one would forge a log line, an ANSI escape would recolour or rewrite
//! the terminal. The text format therefore writes every field value with control characters
//! escaped (`\n`, `\u{1b}`), whoever logs it, so no call site has to remember; the JSON format
//! escapes them already. Colour is used only when standard error is a terminal and `NO_COLOR` is
//! not set.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tern_broker::Config;
use tern_broker::config::LogFormat;
use tracing::field::Field;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

/// Installs the process-wide subscriber the configuration asks for. `RUST_LOG` overrides the level.
pub fn init(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder
            .with_ansi(colour_wanted())
            .fmt_fields(debug_fn(write_field).delimited(" "))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Colour codes in a file or a pipe are noise for whoever reads it later.
fn colour_wanted() -> bool {
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    std::io::stderr().is_terminal() && !no_colour
}

/// One field of an event or span, as `name=value` (the message without its name), the value with
/// control characters escaped.
fn write_field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let name = field.name();
    // Bridged `log` records carry their metadata as `log.*` fields, already shown in the line.
    if name.starts_with("log.") {
        return Ok(());
    }
    if name != "message" {
        write!(writer, "{}=", name.strip_prefix("r#").unwrap_or(name))?;
    }
    write!(Escaping(writer), "{value:?}")
}

/// Passes text through, escaping what could end a log line, drive a terminal or reorder what a
/// reader sees.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let mut chars = rest[at..].chars();
            if let Some(c) = chars.next() {
                write_escaped(&mut self.0, c)?;
            }
            rest = chars.as_str();
        }
        self.0.write_str(rest)
    }
}

/// Control characters (C0 with newline, carriage return and ESC, DEL, C1), the Unicode line and
/// paragraph separators, and the bidirectional formatting characters.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn write_escaped(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        other => write!(out, "\\u{{{:x}}}", u32::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        write!(Escaping(&mut out), "{text}").unwrap();
        out
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            escaped("evil\n2026 INFO forged\x1b[31mred\r\t"),
            "evil\\n2026 INFO forged\\u{1b}[31mred\\r\\t"
        );
        assert_eq!(
            escaped("a\u{85}b\u{2028}c\u{202e}d\x7f"),
            "a\\u{85}b\\u{2028}c\\u{202e}d\\u{7f}"
        );
        assert_eq!(
            escaped("capteur/température/°C ✓"),
            "capteur/température/°C ✓"
        );
    }

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_client_id_with_a_newline_and_an_escape_stays_on_one_line() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(debug_fn(write_field).delimited(" "))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let client_id = "evil\n2026-01-01T00:00:00Z  INFO forged\x1b[31m";
            tracing::info!(client_id = %client_id, method = ?"m\n", "client {} connected", client_id);
        });
        let text = String::from_utf8(captured.0.lock().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains("client evil\\n2026-01-01T00:00:00Z  INFO forged\\u{1b}[31m connected"),
            "{text}"
        );
        assert!(
            text.contains("client_id=evil\\n2026-01-01T00:00:00Z  INFO forged\\u{1b}[31m"),
            "{text}"
        );
        assert!(text.contains(r#"method="m\n""#), "{text}");
    }
}
