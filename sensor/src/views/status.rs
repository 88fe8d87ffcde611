//! `custos status`: the daemon's metrics (OpenMetrics text from its status socket) as a summary
//! a person reads: the run, memory and CPU, each hook and its program type, events and kernel
//! drops per kind, the eBPF programs' cost, and each sink with its backlog and last error.
use std::{collections::BTreeMap, fmt::Write as _};

/// One sample: metric name, labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The samples of an OpenMetrics/Prometheus text exposition (comments skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(brace) => (&line[..brace], &line[brace + 1..]),
        None => {
            let (name, value) = line.split_once(' ')?;
            return Some(Sample {
                name: name.into(),
                labels: Vec::new(),
                value: value.trim().parse().ok()?,
            });
        }
    };
    let mut labels = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let mut key = String::new();
    while let Some((at, c)) = chars.next() {
        match c {
            '}' => {
                let value = rest[at + 1..].split_whitespace().next()?.parse().ok()?;
                return Some(Sample {
                    name: name.into(),
                    labels,
                    value,
                });
            }
            '=' => {
                chars.next(); // the opening quote
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next()?.1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        c => value.push(c),
                    }
                }
                labels.push((std::mem::take(&mut key), value));
            }
            ',' => {}
            c => key.push(c),
        }
    }
    None
}

fn find<'a>(samples: &'a [Sample], name: &str) -> impl Iterator<Item = &'a Sample> + 'a {
    let name = name.to_owned();
    samples.iter().filter(move |s| s.name == name)
}

/// The samples named `name`, in the order of their `label`.
fn sorted_by<'a>(samples: &'a [Sample], name: &str, label: &str) -> Vec<&'a Sample> {
    let mut found: Vec<&Sample> = find(samples, name).collect();
    found.sort_by(|a, b| a.label(label).cmp(b.label(label)));
    found
}

fn value(samples: &[Sample], name: &str) -> f64 {
    find(samples, name).map(|s| s.value).sum()
}

/// The summary of `samples`.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    header(samples, &mut out);
    hooks(samples, &mut out);
    events(samples, &mut out);
    programs(samples, &mut out);
    sinks(samples, &mut out);
    out
}

fn header(samples: &[Sample], out: &mut String) {
    let build = find(samples, "custos_build").next();
    let uptime = value(samples, "custos_uptime_seconds");
    let cpu = value(samples, "custos_process_cpu_seconds");
    let _ = writeln!(
        out,
        "custos {} · run {} · up {}",
        build.map_or("?", |b| b.label("version")),
        build.map_or("?", |b| b.label("run_id")),
        duration(uptime)
    );
    let share = if uptime > 0.0 {
        cpu / uptime * 100.0
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "memory {} resident · cpu {cpu:.2} s ({share:.2}% of one core since start)",
        bytes(value(samples, "custos_process_rss_bytes"))
    );
}

fn hooks(samples: &[Sample], out: &mut String) {
    let _ = writeln!(out, "\nHooks{:<28}program type", "");
    for hook in sorted_by(samples, "custos_hook", "hook") {
        let _ = writeln!(out, "  {:<31}{}", hook.label("hook"), hook.label("path"));
    }
}

fn events(samples: &[Sample], out: &mut String) {
    let mut kinds: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for sample in find(samples, "custos_events_total") {
        kinds.entry(sample.label("kind")).or_default().0 += sample.value;
    }
    for sample in find(samples, "custos_kernel_drops_total") {
        kinds.entry(sample.label("kind")).or_default().1 += sample.value;
    }
    let _ = writeln!(
        out,
        "\nEvents{:<27}{:>12}{:>14}",
        "", "emitted", "kernel drops"
    );
    for (kind, (emitted, dropped)) in kinds {
        let _ = writeln!(out, "  {kind:<31}{emitted:>12}{dropped:>14}");
    }
}

fn programs(samples: &[Sample], out: &mut String) {
    let _ = writeln!(
        out,
        "\neBPF programs{:<20}{:>12}{:>14}",
        "", "runs", "µs per run"
    );
    for count in sorted_by(samples, "custos_bpf_run_count", "program") {
        let program = count.label("program");
        let seconds = find(samples, "custos_bpf_run_seconds")
            .find(|s| s.label("program") == program)
            .map_or(0.0, |s| s.value);
        let per_run = if count.value > 0.0 {
            seconds / count.value * 1e6
        } else {
            0.0
        };
        let _ = writeln!(out, "  {program:<31}{:>12}{per_run:>14.2}", count.value);
    }
}

fn sinks(samples: &[Sample], out: &mut String) {
    let _ = writeln!(
        out,
        "\nSinks{:<28}{:>12}{:>12}{:>10}{:>8}  last error",
        "", "written", "backlog", "oldest", "errors"
    );
    for written in sorted_by(samples, "custos_sink_events_total", "sink") {
        let sink = written.label("sink");
        let of_sink = |name: &str| {
            find(samples, name)
                .find(|s| s.label("sink") == sink)
                .map(|s| s.value)
        };
        let backlog = of_sink("custos_spool_bytes").map_or("-".into(), bytes);
        let oldest = of_sink("custos_spool_oldest_age_seconds").map_or("-".into(), duration);
        let errors = of_sink("custos_sink_errors_total").unwrap_or(0.0);
        let last_error = find(samples, "custos_sink_last_error")
            .find(|s| s.label("sink") == sink)
            .map_or(String::new(), |s| s.label("error").to_owned());
        let _ = writeln!(
            out,
            "  {sink:<31}{:>12}{backlog:>12}{oldest:>10}{errors:>8}  {last_error}",
            written.value
        );
    }
}

fn bytes(value: f64) -> String {
    match value {
        v if v >= 1024.0 * 1024.0 => format!("{:.1} MiB", v / 1024.0 / 1024.0),
        v if v >= 1024.0 => format!("{:.1} KiB", v / 1024.0),
        v => format!("{v} B"),
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP custos_events Events emitted, by kind.
# TYPE custos_events counter
custos_events_total{kind="exec"} 12
custos_events_total{kind="file_open"} 40
custos_kernel_drops_total{kind="file_open"} 3
custos_hook{hook="sched_process_exec",path="tp_btf"} 1
custos_bpf_run_seconds{program="sched_process_exec_btf"} 0.000024
custos_bpf_run_count{program="sched_process_exec_btf"} 12
custos_sink_events_total{sink="nats-a"} 50
custos_spool_bytes{sink="nats-a"} 2048
custos_spool_oldest_age_seconds{sink="nats-a"} 3
custos_sink_errors_total{sink="nats-a"} 2
custos_sink_last_error{sink="nats-a",error="connecting: \"refused\""} 1796000000
custos_process_rss_bytes 25165824
custos_process_cpu_seconds 1.5
custos_uptime_seconds 150
custos_build{version="0.1.0",run_id="r-1"} 1
# EOF
"#;

    #[test]
    fn labels_with_escaped_quotes_parse() {
        let samples = parse(EXPOSITION);
        assert_eq!(samples.len(), 15);
        let error = find(&samples, "custos_sink_last_error").next().unwrap();
        assert_eq!(error.label("error"), "connecting: \"refused\"");
        assert_eq!(error.value, 1_796_000_000.0);
    }

    #[test]
    fn the_summary_names_hooks_kinds_programs_and_sinks() {
        let text = render(&parse(EXPOSITION));
        assert!(
            text.starts_with("custos 0.1.0 · run r-1 · up 2m30s\n"),
            "{text}"
        );
        assert!(text.contains("memory 24.0 MiB resident · cpu 1.50 s (1.00% of one core"));
        assert!(text.contains("  sched_process_exec"), "{text}");
        assert!(text.contains("tp_btf"));
        let file_open = text.lines().find(|l| l.contains("file_open")).unwrap();
        assert!(file_open.ends_with("40             3"), "{file_open:?}");
        let program = text.lines().find(|l| l.contains("exec_btf")).unwrap();
        assert!(program.trim_end().ends_with("2.00"), "{program:?}");
        let sink = text.lines().find(|l| l.contains("nats-a")).unwrap();
        assert!(sink.contains("2.0 KiB") && sink.contains("3s"), "{sink:?}");
        assert!(sink.ends_with("connecting: \"refused\""), "{sink:?}");
    }
}
