//! Sections of the benchmarks page that other scripts measure (`## Cluster` from
//! `scripts/bench-cluster.sh`, `## Storage` from `scripts/bench-storage.sh`): found by their
//! level-2 heading, replaced in place, and carried over when the rest of the page is rewritten.

/// The section under `heading` (`## Name`), from it to the next `## ` heading or the end.
pub fn section_of<'a>(page: &'a str, heading: &str) -> Option<&'a str> {
    let (start, end) = section_bounds(page, heading)?;
    Some(&page[start..end])
}

/// `page` with its section under `heading` replaced by `section`, or with `section` appended.
pub fn splice(page: &str, heading: &str, section: &str) -> String {
    let section = section.trim_end();
    match section_bounds(page, heading) {
        Some((start, end)) => {
            let rest = &page[end..];
            let gap = if rest.is_empty() { "\n" } else { "\n\n" };
            format!("{}{section}{gap}{rest}", &page[..start])
        }
        None if page.trim().is_empty() => format!("{section}\n"),
        None => format!("{}\n\n{section}\n", page.trim_end()),
    }
}

/// Byte offsets of the section: its heading line's start, and the next level-2 heading's start
/// (or the page's end).
fn section_bounds(page: &str, heading: &str) -> Option<(usize, usize)> {
    let mut offset = 0;
    let mut start = None;
    for line in page.split_inclusive('\n') {
        let text = line.trim_end();
        match start {
            None if text == heading => start = Some(offset),
            Some(s) if text.starts_with("## ") => return Some((s, offset)),
            _ => {}
        }
        offset += line.len();
    }
    start.map(|s| (s, page.len()))
}

#[cfg(test)]
mod tests {
    const HEADING: &str = "## Cluster";

    fn section_of(page: &str) -> Option<&str> {
        super::section_of(page, HEADING)
    }

    fn splice(page: &str, section: &str) -> String {
        super::splice(page, HEADING, section)
    }

    #[test]
    fn the_section_replaces_its_old_self_and_nothing_else() {
        let page = "# Benchmarks\n\n## Fan-in\n\nrows\n\n## Cluster\n\nold\n\n### Setups\n\nold too\n\n## Later\n\nkept\n";
        let spliced = splice(page, "## Cluster\n\nnew\n");
        assert_eq!(
            spliced,
            "# Benchmarks\n\n## Fan-in\n\nrows\n\n## Cluster\n\nnew\n\n## Later\n\nkept\n"
        );
        assert_eq!(
            section_of(page),
            Some("## Cluster\n\nold\n\n### Setups\n\nold too\n\n")
        );
        let at_end = "# B\n\n## Cluster\n\nold\n";
        assert_eq!(
            splice(at_end, "## Cluster\n\nnew\n"),
            "# B\n\n## Cluster\n\nnew\n"
        );
        assert_eq!(section_of(at_end), Some("## Cluster\n\nold\n"));
    }

    #[test]
    fn a_page_without_the_section_gets_it_at_the_end() {
        assert_eq!(
            splice("# B\n\n## Fan-in\n\nrows\n", "## Cluster\n\nnew\n"),
            "# B\n\n## Fan-in\n\nrows\n\n## Cluster\n\nnew\n"
        );
        assert_eq!(splice("", "## Cluster\n\nnew\n"), "## Cluster\n\nnew\n");
        assert_eq!(section_of("# B\n\n## Clusters\n"), None);
    }

    #[test]
    fn two_sections_are_told_apart_by_their_heading() {
        let page = "# B\n\n## Cluster\n\nc\n\n## Storage\n\ns\n";
        assert_eq!(
            super::section_of(page, "## Storage"),
            Some("## Storage\n\ns\n")
        );
        assert_eq!(
            super::splice(page, "## Storage", "## Storage\n\nnew\n"),
            "# B\n\n## Cluster\n\nc\n\n## Storage\n\nnew\n"
        );
    }
}
