//! Reporting: the result schema, the summary a run prints, and the `report` subcommand that turns
//! a directory of results into a Markdown page with SVG charts, or (`--cluster`) into the page's
//! `## Cluster` section.

mod cluster;
pub mod format;
mod markdown;
pub mod result;
mod sections;
mod standing;
mod svg;
pub mod table;

use std::path::Path;

use anyhow::{Context, bail};

use self::result::{RunResult, Unmeasured};
use crate::cli::ReportArgs;

/// The section `scripts/bench-storage.sh` writes, which the whole-page report keeps.
const STORAGE_HEADING: &str = "## Storage";

/// Chart files the page refers to.
const THROUGHPUT_SVG: &str = "throughput.svg";
const LATENCY_SVG: &str = "latency-p99.svg";

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let (runs, unmeasured) = load(&args.results)?;
    if runs.is_empty() && unmeasured.is_empty() {
        bail!("no results in {}", args.results.display());
    }
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    // The page as it is: the cluster section goes into it, or is carried over from it.
    let existing = match std::fs::read_to_string(&args.markdown) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", args.markdown.display())),
    };
    if args.cluster {
        let section = cluster::render(&args.commands, &runs, &unmeasured);
        write(
            &args.markdown,
            sections::splice(&existing, cluster::HEADING, &section),
        )?;
        eprintln!(
            "report: {} results, {} unmeasured → the {} section of {}",
            runs.len(),
            unmeasured.len(),
            cluster::HEADING,
            args.markdown.display()
        );
        return Ok(());
    }
    let svg_dir = args
        .svg_dir
        .as_deref()
        .context("--svg-dir is needed for the whole page")?;
    std::fs::create_dir_all(svg_dir).with_context(|| format!("creating {}", svg_dir.display()))?;
    let charts = markdown::charts(&runs);
    write(&svg_dir.join(THROUGHPUT_SVG), charts.throughput)?;
    write(&svg_dir.join(LATENCY_SVG), charts.latency)?;
    let href = args.svg_href.trim_end_matches('/');
    let mut page = markdown::render(
        &args.commands,
        &runs,
        &unmeasured,
        &[
            (
                "Delivered messages per second",
                format!("{href}/{THROUGHPUT_SVG}"),
            ),
            (
                "p99 publish→delivery latency",
                format!("{href}/{LATENCY_SVG}"),
            ),
        ],
    );
    // Measured by scripts/bench-cluster.sh and scripts/bench-storage.sh, from results that are
    // not in --results.
    for heading in [cluster::HEADING, STORAGE_HEADING] {
        if let Some(section) = sections::section_of(&existing, heading) {
            page = sections::splice(&page, heading, section);
        }
    }
    write(&args.markdown, page)?;
    eprintln!(
        "report: {} results, {} unmeasured → {} and {}",
        runs.len(),
        unmeasured.len(),
        args.markdown.display(),
        svg_dir.display()
    );
    Ok(())
}

/// Reads every `*.json` in `dir`: run results, and `{"unmeasured": …}` records.
fn load(dir: &Path) -> anyhow::Result<(Vec<RunResult>, Vec<Unmeasured>)> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    let (mut runs, mut unmeasured) = (Vec::new(), Vec::new());
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(record) = value.get_mut("unmeasured") {
            unmeasured.push(
                serde_json::from_value(record.take())
                    .with_context(|| format!("reading {}", path.display()))?,
            );
        } else {
            runs.push(
                serde_json::from_value(value)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
        }
    }
    Ok((runs, unmeasured))
}
