//! Turns the JSON lines of one run into Markdown tables (bench/README.md
//! keeps the latest of them).

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Scenarios in table order: (key, title, the limit row it compares with).
const SCENARIOS: &[(&str, &str, Option<&str>)] = &[
    ("1-single", "(1) one PATCH, disk", Some("6-limit-single")),
    (
        "2-chunked",
        "(2) 5 MiB PATCHes, disk",
        Some("6-limit-single"),
    ),
    ("3-small", "(3) 64 KiB creation-with-upload ×32", None),
    ("4-many", "(4) 100 concurrent uploads", Some("6-limit-many")),
    ("7-download", "(7) GET of a finished upload ×4", None),
    ("6-limit-single", "(6) limit: 1 stream → file + fsync", None),
    (
        "6-limit-many",
        "(6) limit: 100 streams → files + fsync",
        None,
    ),
];

const SERVERS: &[&str] = &[
    "tusker",
    "tusker-baseline",
    "tusker-variant",
    "tus-node",
    "rustus",
    "limit",
    "limit-dontcache",
];

/// The receivers measured as "the limit": through the page cache, and with
/// `RWF_DONTCACHE`. Ratios divide by the faster of them.
const LIMITS: &[&str] = &["limit", "limit-dontcache"];

fn f(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

pub fn run(input: &str, output: &str, machine: &str) {
    let text = std::fs::read_to_string(input).expect("read --in");
    // (scenario, server) → last result
    let mut rows: BTreeMap<(String, String), Value> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("JSON line");
        let key = (
            v["scenario"].as_str().unwrap_or("?").to_owned(),
            v["server"].as_str().unwrap_or("?").to_owned(),
        );
        rows.insert(key, v);
    }
    let get = |sc: &str, srv: &str, k: &str| -> Option<f64> {
        rows.get(&(sc.to_owned(), srv.to_owned()))
            .and_then(|v| v[k].as_f64())
    };
    // The limit measured right before a scenario's servers, else the
    // stand-alone limit row; the faster way of writing.
    let best = |sc: &str| {
        LIMITS
            .iter()
            .filter_map(|l| get(sc, l, "mb_per_s"))
            .reduce(f64::max)
    };
    let limit_of = |sc: &str, fallback: &str| best(sc).or_else(|| best(fallback));
    let mut md = String::new();
    let _ = writeln!(md, "## Measured\n");
    if !machine.is_empty() {
        let _ = writeln!(md, "{machine}\n");
    }
    let _ = writeln!(
        md,
        "| scenario | server | MB/s | uploads/s | p50 ms | p99 ms | server CPU s/GiB | peak RSS MiB | ×limit |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (sc, title, lim) in SCENARIOS {
        for srv in SERVERS {
            let Some(v) = rows.get(&(sc.to_string(), srv.to_string())) else {
                continue;
            };
            let n = |k: &str| v[k].as_f64();
            let vs_limit = lim.map(|l| ratio(n("mb_per_s"), limit_of(sc, l)));
            let _ = writeln!(
                md,
                "| {title} | {srv} | {} | {} | {} | {} | {} | {} | {} |",
                f(n("mb_per_s"), 0),
                f(n("uploads_per_s"), 0),
                f(n("p50_ms"), 1),
                f(n("p99_ms"), 1),
                f(n("cpu_s_per_gib"), 2),
                f(n("peak_rss_mib"), 0),
                vs_limit.unwrap_or_else(|| "–".into()),
            );
        }
    }
    let _ = writeln!(
        md,
        "\n### Ratios (tusker ÷ other; >1 means tusker is faster / uses more)\n"
    );
    let _ = writeln!(
        md,
        "| scenario | throughput ÷ @tus/server | ÷ rustus | ÷ baseline | ÷ limit (faster way) | CPU/GiB ÷ @tus/server | CPU/GiB ÷ baseline | RSS ÷ @tus/server |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (sc, title, lim) in SCENARIOS.iter().filter(|s| !s.0.starts_with('6')) {
        let thr = if *sc == "3-small" {
            "uploads_per_s"
        } else {
            "mb_per_s"
        };
        let t = get(sc, "tusker", thr);
        let _ = writeln!(
            md,
            "| {title} | {} | {} | {} | {} | {} | {} | {} |",
            ratio(t, get(sc, "tus-node", thr)),
            ratio(t, get(sc, "rustus", thr)),
            ratio(t, get(sc, "tusker-baseline", thr)),
            lim.map(|l| ratio(t, limit_of(sc, l)))
                .unwrap_or_else(|| "–".into()),
            ratio(
                get(sc, "tusker", "cpu_s_per_gib"),
                get(sc, "tus-node", "cpu_s_per_gib")
            ),
            ratio(
                get(sc, "tusker", "cpu_s_per_gib"),
                get(sc, "tusker-baseline", "cpu_s_per_gib")
            ),
            ratio(
                get(sc, "tusker", "peak_rss_mib"),
                get(sc, "tus-node", "peak_rss_mib")
            ),
        );
    }
    let slow: Vec<_> = SERVERS
        .iter()
        .filter_map(|srv| rows.get(&("8-slow".to_owned(), srv.to_string())).map(|v| (srv, v)))
        .collect();
    if !slow.is_empty() {
        let _ = writeln!(md, "\n### (8) slow uploads\n");
        let _ = writeln!(
            md,
            "| server | uploads | completed | HEAD p50 ms | HEAD p99 ms | RSS with all started MiB | KiB per upload | peak RSS MiB |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for (srv, v) in slow {
            let n = |k: &str| v[k].as_f64();
            let _ = writeln!(
                md,
                "| {srv} | {} | {} | {} | {} | {} | {} | {} |",
                f(n("uploads"), 0),
                f(n("completed"), 0),
                f(n("head_p50_ms"), 1),
                f(n("head_p99_ms"), 1),
                f(n("rss_all_started_mib"), 0),
                f(n("rss_per_upload_kib"), 1),
                f(n("peak_rss_mib"), 0),
            );
        }
    }
    std::fs::write(output, md).expect("write --out");
}
