//! The README is a front door and the manual lives in `docs/`: the front door stays short,
//! its two quick-start commands are the ones CI runs, and every relative link between the
//! pages (file and `#anchor`) leads somewhere.
//!
//! Links are read from the Markdown text itself, outside code blocks and code spans, so a
//! page renamed or a heading reworded without its links fails here, not in a reader's
//! browser.

use crate::util::Cli;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const README_MAX_LINES: usize = 250;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// README.md, every page of docs/, and the READMEs of examples/ and benches/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![
        repo_path("README.md"),
        repo_path("examples/README.md"),
        repo_path("benches/README.md"),
    ];
    pages.extend(docs_pages());
    pages
}

fn docs_pages() -> Vec<PathBuf> {
    let dir = repo_path("docs");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
    let mut pages: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
                .path()
        })
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    pages
}

/// The lines of a page outside fenced code blocks: where headings and links can be.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            lines.push(line);
        }
    }
    lines
}

/// A line with its inline code spans left out: `[a](b)` in backticks is code, not a link.
fn without_code_spans(line: &str) -> String {
    line.split('`')
        .enumerate()
        .filter(|(index, _)| index % 2 == 0)
        .map(|(_, piece)| piece)
        .collect()
}

/// The code blocks' lines of a page: where commands to copy live.
fn code_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if in_fence {
            lines.push(line.trim());
        }
    }
    lines
}

/// Link targets of `[text](target)` on a page.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].trim().to_owned());
            rest = &after[end + 1..];
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation (backticks included, not the
/// code between them) dropped, spaces to hyphens.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// Every anchor a page's headings define, repeats numbered as GitHub numbers them.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in prose_lines(text) {
        let level = line.chars().take_while(|&c| c == '#').count();
        if level == 0 || level > 6 || !line[level..].starts_with(' ') {
            continue;
        }
        let anchor = anchor_of(&line[level..]);
        let mut unique = anchor.clone();
        let mut repeat = 0;
        while found.contains(&unique) {
            repeat += 1;
            unique = format!("{anchor}-{repeat}");
        }
        found.insert(unique);
    }
    found
}

fn is_external(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
}

#[test]
fn readme_is_a_front_door_of_at_most_250_lines() {
    let lines = read(&repo_path("README.md")).lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; keep it at most {README_MAX_LINES} and move the manual to docs/"
    );
}

#[test]
fn readme_shows_the_test_command_ci_runs() {
    let ci = read(&repo_path(".ci/run"));
    assert!(
        ci.lines().any(|line| line.trim() == "cargo test"),
        ".ci/run no longer runs `cargo test`; the README's test command must be what CI runs"
    );
    let readme = read(&repo_path("README.md"));
    assert!(
        code_lines(&readme)
            .iter()
            .any(|line| line.split('#').next().unwrap_or_default().trim() == "cargo test"),
        "README.md's quick start does not show `cargo test` as a command to copy"
    );
}

#[test]
fn readme_shows_the_demo_command_the_smoke_test_runs() {
    let ci = read(&repo_path(".ci/run"));
    assert!(
        ci.contains("bash scripts/demo-smoke.sh"),
        ".ci/run no longer runs scripts/demo-smoke.sh, the README's quick start"
    );
    let smoke = read(&repo_path("scripts/demo-smoke.sh"));
    let command = smoke
        .lines()
        .find_map(|line| line.trim().strip_prefix("quick_start=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("scripts/demo-smoke.sh defines no quick_start=\"...\""));
    assert!(
        smoke.contains("$quick_start --listen"),
        "scripts/demo-smoke.sh defines quick_start but does not run it"
    );
    let readme = read(&repo_path("README.md"));
    assert!(
        code_lines(&readme)
            .iter()
            .any(|line| line.split('#').next().unwrap_or_default().trim() == command),
        "README.md's quick start does not show `{command}`, the command scripts/demo-smoke.sh runs"
    );
    assert!(
        code_lines(&readme)
            .iter()
            .any(|line| line.starts_with("curl") && line.contains("/v3/payments/request")),
        "README.md's quick start shows no curl call to /v3/payments/request"
    );
}

#[test]
fn every_relative_link_leads_to_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        let dir = page.parent().unwrap_or_else(|| Path::new("."));
        for target in link_targets(&text) {
            if is_external(&target) {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            if !linked.exists() {
                broken.push(format!("{}: {target}: no such file", page.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if linked.extension().is_some_and(|ext| ext == "md") {
                let headings = anchors(&read(&linked));
                if !headings.contains(anchor) {
                    broken.push(format!(
                        "{}: {target}: {} has no heading with anchor #{anchor} (it has: {})",
                        page.display(),
                        linked.display(),
                        headings.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 20,
        "only {checked} relative links found: is the link scan broken?"
    );
}

#[test]
fn readme_links_every_page_of_docs() {
    let readme = read(&repo_path("README.md"));
    let linked: BTreeSet<String> = link_targets(&readme)
        .into_iter()
        .map(|target| target.split('#').next().unwrap_or_default().to_owned())
        .collect();
    for page in docs_pages() {
        let name = page
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            linked.contains(&format!("docs/{name}")),
            "README.md does not link docs/{name}: a page nobody can find from the front door"
        );
    }
}

/// The key table of docs/configuration.md, row by row: key, flag column, variable column.
fn documented_keys() -> Vec<(String, String, String)> {
    let text = read(&repo_path("docs/configuration.md"));
    let begin = "<!-- config-keys:begin -->";
    let end = "<!-- config-keys:end -->";
    let start = text
        .find(begin)
        .unwrap_or_else(|| panic!("docs/configuration.md has no {begin} marker"));
    let stop = text
        .find(end)
        .unwrap_or_else(|| panic!("docs/configuration.md has no {end} marker"));
    assert!(start < stop, "{end} comes before {begin}");
    let rows: Vec<&str> = text[start + begin.len()..stop]
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(
        rows.first(),
        Some(&"| key | default | flag | variable | meaning |")
    );
    assert_eq!(rows.get(1), Some(&"| --- | --- | --- | --- | --- |"));
    rows[2..]
        .iter()
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 5, "a row needs five cells: {row}");
            let key = cells[0]
                .strip_prefix('`')
                .and_then(|key| key.strip_suffix('`'))
                .unwrap_or_else(|| panic!("row does not start with a `key`: {row}"));
            (key.to_owned(), cells[2].to_owned(), cells[3].to_owned())
        })
        .collect()
}

/// The docs' key table is checked against the key definitions the binary is built from
/// (`src/config/raw.rs`): same keys in the same order, the same flags and variables.
#[test]
fn configuration_key_table_matches_the_code() {
    let documented = documented_keys();
    let code = linepay_sidecar::config::keys();
    let documented_paths: Vec<&str> = documented.iter().map(|(key, _, _)| key.as_str()).collect();
    let code_paths: Vec<&str> = code.iter().map(|key| key.path.as_str()).collect();
    assert_eq!(
        documented_paths, code_paths,
        "docs/configuration.md's key table and src/config/raw.rs list different keys"
    );
    for ((key, flags, variable), doc) in documented.iter().zip(&code) {
        let expected_flags = doc
            .flag()
            .map(|long| {
                std::iter::once(long)
                    .chain(doc.aliases().iter().copied())
                    .map(|name| format!("`--{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        assert_eq!(flags, &expected_flags, "flag column of `{key}`");
        let expected_variable = doc
            .env()
            .map(|name| format!("`{name}`"))
            .unwrap_or_default();
        assert_eq!(variable, &expected_variable, "variable column of `{key}`");
    }
}

#[test]
fn anchors_follow_github() {
    assert_eq!(
        anchor_of("LINE Pay's IP whitelist (egress)"),
        "line-pays-ip-whitelist-egress"
    );
    assert_eq!(
        anchor_of("Checking the public address: `expect_ip`"),
        "checking-the-public-address-expect_ip"
    );
    assert_eq!(
        anchors("# A\n## B\n```\n# not a heading\n```\n## B\n"),
        BTreeSet::from(["a".to_owned(), "b".to_owned(), "b-1".to_owned()])
    );
}

// ---------------------------------------------------------------------------------------
// Shell blocks: each is run in CI, or says why it cannot be run here.
//
// The line before every ```sh block is one of
//   <!-- run: FILE -->          FILE (a script .ci/run runs, or a test under tests/) runs
//                               the block's commands; it names the page it runs them for
//   <!-- not run: REASON -->    why not here (a server that runs until stopped, Docker,
//                               root, a real LINE Pay channel, ...)
// scripts/docs-check.sh runs the blocks marked `run: scripts/docs-check.sh` as written,
// against the demo (ports rewritten to the demo's).

/// Pages whose shell blocks are checked: README.md, docs/, examples/ and deploy/ READMEs.
fn pages_with_commands() -> Vec<PathBuf> {
    let mut pages = pages();
    for readme in [
        "deploy/README.md",
        "deploy/compose/README.md",
        "deploy/prometheus/README.md",
        "deploy/grafana/README.md",
    ] {
        pages.push(repo_path(readme));
    }
    pages.retain(|page| page.exists());
    pages
}

/// A ```sh block: its line and the marker line before it (blank lines skipped), if any.
fn shell_blocks(text: &str) -> Vec<(usize, Option<String>)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut in_fence = false;
    for (index, line) in lines.iter().enumerate() {
        let fence = line.trim_start();
        if !fence.starts_with("```") {
            continue;
        }
        if !in_fence
            && matches!(
                fence.trim_end(),
                "```sh" | "```bash" | "```shell" | "```console"
            )
        {
            let marker = lines[..index]
                .iter()
                .rev()
                .find(|line| !line.trim().is_empty())
                .map(|line| line.trim().to_owned())
                .filter(|line| line.starts_with("<!--"));
            blocks.push((index + 1, marker));
        }
        in_fence = !in_fence;
    }
    blocks
}

/// What a marker says: `Ok(Some(file))` run by it, `Ok(None)` not run (with a reason),
/// `Err` a marker that is neither.
fn marker_runner(marker: &str) -> Result<Option<String>, String> {
    let inner = marker
        .strip_prefix("<!--")
        .and_then(|rest| rest.strip_suffix("-->"))
        .map(str::trim)
        .ok_or_else(|| format!("`{marker}` is not one HTML comment"))?;
    if let Some(reason) = inner.strip_prefix("not run:") {
        return if reason.trim().len() >= 10 {
            Ok(None)
        } else {
            Err(format!("`{marker}` gives no reason"))
        };
    }
    match inner.strip_prefix("run:") {
        Some(file) if !file.trim().is_empty() => Ok(Some(file.trim().to_owned())),
        _ => Err(format!(
            "`{marker}` is neither `<!-- run: FILE -->` nor `<!-- not run: REASON -->`"
        )),
    }
}

#[test]
fn every_shell_block_is_run_in_ci_or_says_why_not() {
    let ci = read(&repo_path(".ci/run"));
    let mut problems = Vec::new();
    let mut run = 0;
    let mut not_run = 0;
    for page in pages_with_commands() {
        let name = page
            .strip_prefix(repo_path(""))
            .unwrap_or(&page)
            .to_string_lossy()
            .into_owned();
        for (line, marker) in shell_blocks(&read(&page)) {
            let at = format!("{name}:{line}");
            let Some(marker) = marker else {
                problems.push(format!(
                    "{at}: a shell block without `<!-- run: FILE -->` or `<!-- not run: REASON -->` before it"
                ));
                continue;
            };
            match marker_runner(&marker) {
                Err(problem) => problems.push(format!("{at}: {problem}")),
                Ok(None) => not_run += 1,
                Ok(Some(runner)) => {
                    run += 1;
                    let path = repo_path(&runner);
                    if !path.is_file() {
                        problems.push(format!("{at}: {runner} does not exist"));
                        continue;
                    }
                    if !runner.starts_with("tests/") && runner != ".ci/run" && !ci.contains(&runner)
                    {
                        problems.push(format!("{at}: .ci/run does not run {runner}"));
                    }
                    // The runner names the page, or reads the blocks by this very marker
                    // from every page of the page's directory (scripts/docs-check.sh).
                    let text = read(&path);
                    let directory = Path::new(&name)
                        .parent()
                        .map(|dir| dir.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let by_marker = text.contains(&marker)
                        && !directory.is_empty()
                        && text.contains(&format!("{directory}/*.md"));
                    if !text.contains(&name) && !by_marker {
                        problems.push(format!(
                            "{at}: {runner} never names {name}: it cannot be what runs this block"
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        run >= 5 && not_run >= 5,
        "{run} blocks run, {not_run} not: is the scan broken?"
    );
}

#[test]
fn shell_block_markers_are_read_strictly() {
    let page = "text\n\n<!-- not run: needs Docker, not here -->\n```sh\ndocker ps\n```\n\n```sh\nls\n```\n<!-- run: scripts/docs-check.sh -->\n\n```bash\necho\n```\n";
    let blocks = shell_blocks(page);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(
        marker_runner(blocks[0].1.as_deref().unwrap_or_default()),
        Ok(None)
    );
    assert_eq!(blocks[1], (8, None));
    assert_eq!(
        marker_runner(blocks[2].1.as_deref().unwrap_or_default()),
        Ok(Some("scripts/docs-check.sh".to_owned()))
    );
    assert!(marker_runner("<!-- not run: -->").is_err());
    assert!(marker_runner("<!-- runs: x -->").is_err());
    assert!(marker_runner("<!-- run: -->").is_err());
}

// ---------------------------------------------------------------------------------------
// The command line the docs describe is the binary's.

fn help(args: &[&str]) -> String {
    let mut cli = Cli::new();
    for arg in args {
        cli = cli.arg(*arg);
    }
    let output = cli.run();
    assert!(output.status.success(), "{args:?}: {output:?}");
    output.stdout
}

/// The subcommands `linepay-sidecar --help` lists.
fn subcommands() -> BTreeSet<String> {
    let help = help(&["--help"]);
    let commands = help
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_else(|| panic!("no Commands: in --help:\n{help}"));
    commands
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `linepay-sidecar WORD` in code (blocks and spans) names a subcommand that exists.
#[test]
fn every_subcommand_the_docs_run_exists() {
    let subcommands = subcommands();
    assert!(
        subcommands.contains("check") && subcommands.contains("calls"),
        "{subcommands:?}"
    );
    let mut wrong = Vec::new();
    let mut checked = 0;
    for page in pages_with_commands() {
        let text = read(&page);
        let spans: Vec<String> = prose_lines(&text)
            .iter()
            .flat_map(|line| {
                line.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        let code = code_lines(&text).into_iter().map(str::to_owned);
        for snippet in spans.into_iter().chain(code) {
            let words: Vec<&str> = snippet.split_whitespace().collect();
            for pair in words.windows(2) {
                let [binary, word] = pair else { continue };
                if *binary != "linepay-sidecar" || !word.chars().all(|c| c.is_ascii_lowercase()) {
                    continue;
                }
                checked += 1;
                if !subcommands.contains(*word) {
                    wrong.push(format!(
                        "{}: `linepay-sidecar {word}`: no such subcommand ({subcommands:?})",
                        page.display()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        checked >= 10,
        "only {checked} subcommands found: is the scan broken?"
    );
}

/// Every flag of the sidecar that sets no configuration key, and its variable, is in
/// docs/configuration.md's "Flags and environment without a key".
#[test]
fn every_flag_without_a_key_is_in_the_configuration_table() {
    let mut key_flags = BTreeSet::new();
    for key in linepay_sidecar::config::keys() {
        key_flags.extend(key.flag().map(str::to_owned));
        key_flags.extend(key.aliases().iter().map(|alias| (*alias).to_owned()));
    }
    let doc = read(&repo_path("docs/configuration.md"));
    let section = doc
        .split("## Flags and environment without a key")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| {
            panic!("docs/configuration.md has no 'Flags and environment without a key'")
        });
    let help = help(&["--help"]);
    let mut missing = Vec::new();
    let mut found = 0;
    for line in help.lines().map(str::trim_start) {
        let Some(flag) = line
            .strip_prefix("--")
            .or_else(|| line.split_once(", --").map(|(_, flag)| flag))
        else {
            continue;
        };
        let flag: String = flag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if key_flags.contains(&flag) || flag == "help" || flag == "version" {
            continue;
        }
        found += 1;
        if !section.contains(&format!("`--{flag}")) {
            missing.push(format!("--{flag}"));
        }
        if let Some(env) = line
            .split("[env: ")
            .nth(1)
            .and_then(|rest| rest.split('=').next())
        {
            if !section.contains(env) {
                missing.push(env.to_owned());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md's flags without a key lack: {}",
        missing.join(", ")
    );
    assert!(
        found >= 3,
        "only {found} flags without a key: is the scan broken?"
    );
}

/// Every file under `dir` (recursively), sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.filter_map(|entry| entry.ok().map(|entry| entry.path())) {
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A page of the manual named in a comment of the example configs, the deploy files or
/// the code (`docs/egress.md`) exists: a page renamed, or a section moved out of the
/// README, cannot leave them pointing nowhere.
#[test]
fn pages_named_by_configs_deploy_files_and_code_exist() {
    let mut wrong = Vec::new();
    let mut checked = 0;
    let mut files = files_under(&repo_path("config"));
    files.extend(files_under(&repo_path("deploy")));
    files.extend(files_under(&repo_path("src")));
    files.extend(files_under(&repo_path("scripts")));
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (at, _) in text.match_indices("docs/") {
            if at > 0
                && text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/-_.".contains(*c))
                .collect();
            let Some(page) = name.strip_suffix(".md").map(|stem| format!("{stem}.md")) else {
                continue;
            };
            checked += 1;
            if !repo_path(&page).is_file() {
                wrong.push(format!(
                    "{}: names {page}, which does not exist",
                    file.display()
                ));
            }
        }
        if text.contains("README section") {
            wrong.push(format!(
                "{}: points to a README section; the manual is in docs/",
                file.display()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        checked >= 10,
        "only {checked} pages named: is the scan broken?"
    );
}
