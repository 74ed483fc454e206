//! Markdown tables from the JSON lines that `suite`, `crash` and `corrupt` print: medians, with
//! the range over repetitions where the spread matters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

pub fn report(paths: &[PathBuf]) -> Result<()> {
    let mut rows: Vec<Value> = Vec::new();
    for p in paths {
        let s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        for (i, l) in s.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            rows.push(
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}: not JSON", p.display(), i + 1))?,
            );
        }
    }
    let tables: [(&str, Table); 3] = [
        ("run", throughput_table),
        ("crash", crash_table),
        ("corrupt", corrupt_table),
    ];
    let mut first = true;
    for (kind, table) in tables {
        let of_kind: Vec<&Value> = rows.iter().filter(|r| r["kind"] == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        if !first {
            println!();
        }
        first = false;
        table(&of_kind);
    }
    Ok(())
}

/// Prints the Markdown table of one kind of result.
type Table = fn(&[&Value]);

/// A field by dotted path, NaN when absent (a missing figure shows as "–", never as 0).
fn f(v: &Value, k: &str) -> f64 {
    let mut cur = v;
    for part in k.split('.') {
        cur = &cur[part];
    }
    cur.as_f64().unwrap_or(f64::NAN)
}

fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        x => x.to_string(),
    }
}

fn key(v: &Value, ks: &[&str]) -> String {
    ks.iter().map(|k| s(v, k)).collect::<Vec<_>>().join("|")
}

fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x >= 100.0 {
        let s = format!("{x:.0}");
        let mut o = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                o.push(',');
            }
            o.push(ch);
        }
        o
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 0.1 {
        format!("{x:.2}")
    } else if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.3}")
    }
}

fn finite(xs: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn median(xs: &[f64]) -> f64 {
    let v = finite(xs);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn range(xs: &[f64]) -> String {
    let v = finite(xs);
    let (Some(lo), Some(hi)) = (v.first(), v.last()) else {
        return "–".into();
    };
    let (a, b) = (fmt(*lo), fmt(*hi));
    if a == b { a } else { format!("{a}–{b}") }
}

/// Rows grouped by `ks`, groups in the order of their first row.
fn group<'a>(rows: &[&'a Value], ks: &[&str]) -> Vec<Vec<&'a Value>> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut groups: Vec<Vec<&Value>> = Vec::new();
    for r in rows {
        let k = key(r, ks);
        let i = *index.entry(k).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(r);
    }
    groups
}

fn throughput_table(runs: &[&Value]) {
    const CASE: [&str; 4] = ["workload", "producers", "window", "payload"];
    let mut groups = group(
        runs,
        &[
            "workload",
            "producers",
            "window",
            "payload",
            "store",
            "mode",
        ],
    );
    groups.sort_by_key(|g| {
        let r = g[0];
        (
            s(r, "workload"),
            r["producers"].as_u64(),
            r["window"].as_u64(),
            r["payload"].as_u64(),
        )
    });
    // The in-memory reference of each case, for the "× mem" column.
    let mem: BTreeMap<String, f64> = groups
        .iter()
        .filter(|g| g[0]["store"] == "mem")
        .map(|g| {
            let xs: Vec<f64> = g.iter().map(|v| f(v, "acked_per_s")).collect();
            (key(g[0], &CASE), median(&xs))
        })
        .collect();
    println!(
        "| workload | P×W | payload B | store | mode | acked/s (median, range) | × mem | fsyncs/ack | device B/ack | write amp. device | write amp. process | store size KiB | n |"
    );
    println!("|---|---|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for g in &groups {
        let r = g[0];
        let col = |fun: &dyn Fn(&Value) -> f64| g.iter().map(|v| fun(v)).collect::<Vec<_>>();
        let rate = col(&|v| f(v, "acked_per_s"));
        let vs_mem = mem
            .get(&key(r, &CASE))
            .map_or(f64::NAN, |m| median(&rate) / m);
        println!(
            "| {} | {}×{} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} |",
            s(r, "workload"),
            r["producers"],
            r["window"],
            r["payload"],
            s(r, "store"),
            s(r, "mode"),
            fmt(median(&rate)),
            range(&rate),
            if s(r, "store") == "mem" {
                "1".into()
            } else {
                fmt(vs_mem)
            },
            fmt(median(&col(&|v| f(v, "fsyncs") / f(v, "acked")))),
            fmt(median(
                &col(&|v| f(v, "device_write_bytes") / f(v, "acked"))
            )),
            fmt(median(&col(
                &|v| f(v, "device_write_bytes") / f(v, "payload_bytes")
            ))),
            fmt(median(&col(
                &|v| f(v, "write_bytes") / f(v, "payload_bytes")
            ))),
            fmt(median(&col(&|v| f(v, "disk_bytes") / 1024.0))),
            g.len()
        );
    }
}

fn crash_table(crashes: &[&Value]) {
    println!(
        "| store | mode | payload B | n | acked at kill | store MiB | cold cache | open after crash ms | + scan ms | acked missing | durable missing | half-committed | bad | clean reopen ms | reopen with integrity check ms |"
    );
    println!("|---|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for g in group(crashes, &["store", "mode", "payload", "cold_cache"]) {
        let r = g[0];
        let col =
            |fun: &dyn Fn(&Value) -> f64| range(&g.iter().map(|v| fun(v)).collect::<Vec<_>>());
        // A recovery that did not complete is a failure, whatever its figures.
        let failed = g
            .iter()
            .filter(|v| v["recover"]["error"].is_string() || v["recover"].is_null())
            .count();
        let open = if failed > 0 {
            format!("{} FAILED of {}", failed, g.len())
        } else {
            col(&|v| f(v, "recover.open_ms"))
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s(r, "store"),
            s(r, "mode"),
            r["payload"],
            g.len(),
            col(&|v| f(v, "acked")),
            col(&|v| f(v, "disk_bytes") / 1048576.0),
            r["cold_cache"],
            open,
            col(&|v| f(v, "recover.scan_ms")),
            col(&|v| f(v, "recover.missing_acked")),
            col(&|v| f(v, "recover.missing_durable")),
            col(&|v| f(v, "recover.half_committed")),
            col(&|v| f(v, "recover.bad_content") + f(v, "recover.bad_entries")),
            col(&|v| f(v, "reopen.open_ms")),
            col(&|v| f(v, "reopen_checked.open_ms")),
        );
    }
}

fn corrupt_table(corrupt: &[&Value]) {
    println!("| store | integrity check on open | damage | file | outcome |");
    println!("|---|---|---|---|---|");
    for r in corrupt {
        let outcome = s(r, "outcome").replace('|', "/");
        let outcome: String = outcome.chars().take(220).collect();
        println!(
            "| {} | {} | {} | {} | {} |",
            s(r, "store"),
            r["check_on_open"],
            s(r, "trial"),
            s(r, "file"),
            outcome
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range_skip_missing_figures() {
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert!(median(&[f64::NAN]).is_nan());
        assert_eq!(range(&[1500.0, 1200.0]), "1,200–1,500");
        assert_eq!(range(&[]), "–");
    }
}
