//! `ternd`'s logs, on stderr, in the form its reader wants ([`Style`]):
//!
//! - `[log] json = true`: one JSON object a line, for a log shipper;
//! - stderr is systemd's journal (`JOURNAL_STREAM` names it, [`crate::systemd`]): text
//!   without timestamps (the journal stamps each line) and without colours, each line
//!   prefixed with its syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>`
//!   debug and trace; `sd-daemon(3)`), which the journal strips and records, so that
//!   `journalctl -u ternd -p warning` shows warnings and errors;
//! - otherwise text with timestamps, coloured only on a terminal (not in SMF's
//!   `/var/svc/log/*.log` or a file stderr was redirected to).
//!
//! `RUST_LOG` filters as usual (default `info,openraft=warn`). It filters the log
//! only: the trace layer of `[telemetry]` ([`crate::telemetry`]), when there is one,
//! sits beside it with its own filter.

use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, format};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// One JSON object a line.
    Json,
    /// Text for the journal: syslog priority prefixes, no timestamps, no ANSI colours.
    Journal,
    /// Text with timestamps; ANSI colours when `ansi`.
    Text { ansi: bool },
}

impl Style {
    /// The style for `[log] json`, given whether stderr is the journal and whether it
    /// is a terminal. JSON, when asked for, wins.
    pub fn choose(json: bool, stderr_is_journal: bool, stderr_is_terminal: bool) -> Self {
        match (json, stderr_is_journal) {
            (true, _) => Self::Json,
            (false, true) => Self::Journal,
            (false, false) => Self::Text { ansi: stderr_is_terminal },
        }
    }

    /// The style for `[log] json` on this process's stderr.
    pub fn for_stderr(json: bool) -> Self {
        Self::choose(json, crate::systemd::stderr_is_journal(), std::io::stderr().is_terminal())
    }
}

/// Installs the global subscriber writing to stderr in `style`, with `traces` (the
/// OpenTelemetry layer, [`crate::telemetry::init`]) beside it when traces are exported.
pub fn init(style: Style, traces: Option<crate::telemetry::TraceLayer>) {
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // The RPC server spans are for traces: in the log they would only prefix every line
    // a handler writes.
    let filter = env.and(filter_fn(|m| !(m.is_span() && m.target() == crate::telemetry::SPAN_TARGET)));
    let registry = tracing_subscriber::registry().with(traces);
    let layer = fmt::layer().with_writer(std::io::stderr);
    match style {
        Style::Json => registry.with(layer.json().with_filter(filter)).init(),
        Style::Journal => registry
            .with(layer.with_ansi(false).event_format(JournalPriority(format().without_time())).with_filter(filter))
            .init(),
        Style::Text { ansi } => registry.with(layer.with_ansi(ansi).with_filter(filter)).init(),
    }
}

/// The syslog priority the journal records for a line of `level`.
pub fn journal_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event format that prefixes each event with `<priority>` for the journal.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        write!(writer, "<{}>", journal_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal gets plain untimed text, a terminal colours, anything else plain timed text; JSON wins when configured.
    #[test]
    fn the_log_style_follows_the_config_then_the_journal_then_the_terminal() {
        use Style::*;
        let cases = [
            // (json, journal, terminal) -> style
            ((true, true, false), Json),
            ((true, false, true), Json),
            ((true, false, false), Json),
            ((false, true, false), Journal),
            ((false, true, true), Journal),
            ((false, false, true), Text { ansi: true }),
            ((false, false, false), Text { ansi: false }),
        ];
        for ((json, journal, terminal), want) in cases {
            assert_eq!(
                Style::choose(json, journal, terminal),
                want,
                "json={json} journal={journal} terminal={terminal}"
            );
        }
    }

    /// Errors, warnings and info keep their own syslog priorities; debug and trace share debug's.
    #[test]
    fn journal_priorities_follow_syslog_severities() {
        let got: Vec<u8> =
            [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE].map(journal_priority).to_vec();
        assert_eq!(got, [3, 4, 6, 7, 7]);
    }
}
