//! The public view of `/metrics`: every series of the Prometheus text summed over its labels,
//! so a scrape without a credential shows totals (sessions in use, opens, denials, failed
//! authentications...) and no license id, account or per-tenant figure. Quantile lines of
//! summaries (and buckets of histograms) are left out: they cannot be summed; their `_sum` and
//! `_count` are.
//!
//! It reads the text format as the exporter writes it (`name{labels} value`, `# HELP`,
//! `# TYPE`), so every metric added later is covered without being listed here. The few
//! families whose sum means nothing are listed in `NOT_SUMMED`: a license's settings (a total
//! of alert thresholds is no threshold) are left out, and the time left of delegations shows
//! the soonest end.

/// How a family whose sum means nothing is shown in the public view.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Aggregate {
    /// A per-license setting: not shown (with a credential, every series is).
    Omitted,
    /// The smallest value over the labels: what needs attention first.
    Min,
}

/// The families that are not summed (see the module doc).
const NOT_SUMMED: &[(&str, Aggregate)] = &[
    (
        "leasehold_license_alert_threshold_percent",
        Aggregate::Omitted,
    ),
    (
        "leasehold_license_alert_denials_per_hour",
        Aggregate::Omitted,
    ),
    ("leasehold_delegation_seconds_left", Aggregate::Min),
];

fn aggregate_of(name: &str) -> Option<Aggregate> {
    NOT_SUMMED
        .iter()
        .find(|(family, _)| *family == name)
        .map(|&(_, aggregate)| aggregate)
}

/// One metric family: its comment lines and its samples summed by name, in order.
struct Family {
    comments: Vec<String>,
    kind: Option<String>,
    samples: Vec<(String, f64)>,
}

/// Sums every series of `text` over its labels (see the module doc).
pub fn totals(text: &str) -> String {
    let mut families: Vec<Family> = Vec::new();
    let mut current: Option<Family> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            let keyword = words.next();
            let name = words.next().unwrap_or_default();
            let starts_family = current
                .as_ref()
                .is_none_or(|f| !f.samples.is_empty() || !names_family(f, name));
            if starts_family {
                families.extend(current.take());
                current = Some(Family {
                    comments: Vec::new(),
                    kind: None,
                    samples: Vec::new(),
                });
            }
            if let Some(family) = current.as_mut() {
                if keyword == Some("TYPE") {
                    family.kind = words.next().map(str::to_owned);
                }
                family.comments.push(line.to_owned());
            }
            continue;
        }
        let Some((name, labels, value)) = parse_sample(line) else {
            continue;
        };
        if labels.contains("quantile=") || labels.contains("le=") {
            continue;
        }
        let family = current.get_or_insert_with(|| Family {
            comments: Vec::new(),
            kind: None,
            samples: Vec::new(),
        });
        let min = aggregate_of(name) == Some(Aggregate::Min);
        match family.samples.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) if min => *total = total.min(value),
            Some((_, total)) => *total += value,
            None => family.samples.push((name.to_owned(), value)),
        }
    }
    families.extend(current);

    let mut out = String::new();
    for family in families {
        let name = family_name(&family.comments);
        if name.as_deref().and_then(aggregate_of) == Some(Aggregate::Omitted) {
            continue;
        }
        let mut samples = family.samples;
        if samples.is_empty() {
            // A counter or gauge with no series yet is a total of zero.
            match (family.kind.as_deref(), name) {
                (Some("counter" | "gauge"), Some(name)) => samples.push((name, 0.0)),
                _ => continue,
            }
        }
        for comment in &family.comments {
            out.push_str(comment);
            out.push('\n');
        }
        for (name, value) in samples {
            out.push_str(&format!("{name} {value}\n"));
        }
    }
    out
}

/// Whether comment lines about `name` belong to the family being read (its HELP then TYPE).
fn names_family(family: &Family, name: &str) -> bool {
    family_name(&family.comments).is_none_or(|n| n == name)
}

fn family_name(comments: &[String]) -> Option<String> {
    comments
        .first()
        .and_then(|c| c.trim_start_matches('#').split_whitespace().nth(1))
        .map(str::to_owned)
}

/// `name{labels} value` or `name value`: the name, the label text, the value.
fn parse_sample(line: &str) -> Option<(&str, &str, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = line.get(..name_end)?;
    let rest = line.get(name_end..)?;
    let (labels, value) = if rest.starts_with('{') {
        let close = label_end(rest)?;
        (rest.get(1..close)?, rest.get(close + 1..)?)
    } else {
        ("", rest)
    };
    let value = value.split_whitespace().next()?.parse::<f64>().ok()?;
    Some((name, labels, value))
}

/// The index of the `}` closing the label set that `text` starts with (quotes respected).
fn label_end(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_over_their_labels_and_quantiles_dropped() {
        let text = "\
# HELP leasehold_sessions_in_use Live sessions per license.
# TYPE leasehold_sessions_in_use gauge
leasehold_sessions_in_use{license=\"a\"} 2
leasehold_sessions_in_use{license=\"b\"} 3
# TYPE leasehold_denials_total counter
leasehold_denials_total{license=\"a\"} 1
leasehold_denials_total{license=\"x}\\\"y\"} 4

# TYPE leasehold_heartbeats_total counter
leasehold_heartbeats_total 7

# TYPE leasehold_queue_wait_seconds summary
leasehold_queue_wait_seconds{outcome=\"granted\",quantile=\"0.5\"} 0.2
leasehold_queue_wait_seconds_sum{outcome=\"granted\"} 1.5
leasehold_queue_wait_seconds_sum{outcome=\"timeout\"} 2
leasehold_queue_wait_seconds_count{outcome=\"granted\"} 3
leasehold_queue_wait_seconds_count{outcome=\"timeout\"} 1
";
        let public = totals(text);
        assert_eq!(
            public,
            "\
# HELP leasehold_sessions_in_use Live sessions per license.
# TYPE leasehold_sessions_in_use gauge
leasehold_sessions_in_use 5
# TYPE leasehold_denials_total counter
leasehold_denials_total 5
# TYPE leasehold_heartbeats_total counter
leasehold_heartbeats_total 7
# TYPE leasehold_queue_wait_seconds summary
leasehold_queue_wait_seconds_sum 3.5
leasehold_queue_wait_seconds_count 4
"
        );
        assert!(!public.contains('{'));
    }

    #[test]
    fn settings_are_left_out_and_time_left_shows_the_soonest() {
        let text = "\
# HELP leasehold_license_alert_threshold_percent The license's alert threshold.
# TYPE leasehold_license_alert_threshold_percent gauge
leasehold_license_alert_threshold_percent{license=\"a\"} 80
leasehold_license_alert_threshold_percent{license=\"b\"} 90
# TYPE leasehold_license_alert_threshold_reached gauge
leasehold_license_alert_threshold_reached{license=\"a\"} 1
leasehold_license_alert_threshold_reached{license=\"b\"} 1
# TYPE leasehold_license_alert_denials_per_hour gauge
leasehold_license_alert_denials_per_hour{license=\"a\"} 20
# TYPE leasehold_delegation_seconds_left gauge
leasehold_delegation_seconds_left{license=\"a\"} 86400
leasehold_delegation_seconds_left{license=\"b\"} 3600
leasehold_delegation_seconds_left{license=\"c\"} 604800
";
        assert_eq!(
            totals(text),
            "\
# TYPE leasehold_license_alert_threshold_reached gauge
leasehold_license_alert_threshold_reached 2
# TYPE leasehold_delegation_seconds_left gauge
leasehold_delegation_seconds_left 3600
"
        );
    }

    #[test]
    fn an_empty_gauge_is_a_zero_total() {
        let public = totals(
            "# HELP leasehold_sessions_in_use Live sessions per license.\n\
             # TYPE leasehold_sessions_in_use gauge\n",
        );
        assert!(
            public.ends_with("leasehold_sessions_in_use 0\n"),
            "{public}"
        );
    }
}
