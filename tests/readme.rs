//! The README's curl walk-through, replayed against the real binary: every
//! `$ ` command of its console blocks runs through `bash` with `curl`, and
//! the answer must be the one printed below it: the same status line, every
//! header shown (values compared, but for dates and expiry times, which
//! only have to be present), no header beyond the ones the README says it
//! leaves out, and the same body. Upload ids and the listen address are the
//! only substitutions.

mod common;

use common::proc::Spawn;
use std::collections::BTreeMap;
use std::process::Command;

/// Where the README's server listens (`cargo run --release`).
const README_ADDR: &str = "127.0.0.1:1080";

/// Headers the README leaves out: present on every response, or (for
/// `connection: close` on an error answered before the body was read)
/// depending on timing.
const OMITTED: &[&str] = &[
    "access-control-expose-headers",
    "vary",
    "x-request-id",
    "connection",
];

/// Headers whose value changes from run to run.
const VOLATILE: &[&str] = &["date", "upload-expires"];

/// One `$ command` and what the README shows it printing.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The console blocks of the "Walk-through with curl" section, as steps.
fn walkthrough(readme: &str) -> Vec<Step> {
    let start = readme
        .find("## Walk-through with curl")
        .expect("README.md has a \"Walk-through with curl\" section");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut continued = false;
    for line in section[..end].lines() {
        if !in_console {
            in_console = line.trim_end() == "```console";
            continue;
        }
        if line.trim_end() == "```" {
            in_console = false;
            continue;
        }
        if continued {
            let step = steps.last_mut().expect("a continued command");
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push(Step {
                command: cmd.to_owned(),
                expected: Vec::new(),
            });
            continued = cmd.ends_with('\\');
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_owned());
        }
    }
    steps
}

/// An HTTP answer as curl prints it with `-i`: status line, headers, body.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: String,
    headers: BTreeMap<String, String>,
    body: String,
}

fn parse_answer(lines: &[String]) -> Answer {
    let mut lines = lines.iter().map(|l| l.trim_end_matches('\r'));
    let status = lines.next().unwrap_or_default().trim().to_owned();
    let mut headers = BTreeMap::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("not a header line: {line:?}"));
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let body = lines.collect::<Vec<_>>().join("\n").trim().to_owned();
    Answer {
        status,
        headers,
        body,
    }
}

/// The 32-hex-digit upload ids in `text`, in order.
fn ids(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 32 <= bytes.len() {
        let run = &bytes[i..i + 32];
        let bounded = |j: usize| j >= bytes.len() || !bytes[j].is_ascii_hexdigit();
        if run
            .iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && (i == 0 || !bytes[i - 1].is_ascii_hexdigit())
            && bounded(i + 32)
        {
            out.push(String::from_utf8_lossy(run).into_owned());
            i += 32;
        } else {
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn readme_curl_walkthrough_matches_the_binary() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let steps = walkthrough(&readme);
    assert!(
        steps.len() >= 8,
        "the walk-through has {} commands; the parser lost some",
        steps.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Spawn::in_dir(dir.path()).start().await;
    let addr = server.addr.to_string();
    // README id -> id this run created.
    let mut renamed: Vec<(String, String)> = Vec::new();
    let mut last_location: Option<String> = None;
    // The README sets `E` in a sh block: the endpoint.
    let mut vars: Vec<(String, String)> = vec![("E".into(), server.endpoint())];
    for step in &steps {
        let mut command = step.command.replace(README_ADDR, &addr);
        for (theirs, ours) in &renamed {
            command = command.replace(theirs, ours);
        }
        // `U=URL`: the README names the upload it just created.
        if let Some(value) = command.strip_prefix("U=") {
            let location = last_location
                .take()
                .expect("U= follows a creation that answered with a Location");
            let readme_id = ids(value).pop().expect("U= names an upload id");
            let our_id = ids(&location).pop().expect("Location names an upload id");
            renamed.push((readme_id, our_id));
            vars.push(("U".into(), location));
            continue;
        }
        let out = Command::new("bash")
            .args(["-c", &command])
            .envs(vars.iter().cloned())
            .output()
            .expect("run bash (curl must be installed)");
        assert!(
            out.status.success(),
            "`{command}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let got = parse_answer(&text.lines().map(str::to_owned).collect::<Vec<_>>());
        let mut expected_lines = step.expected.clone();
        while expected_lines.last().is_some_and(|l| l.trim().is_empty()) {
            expected_lines.pop();
        }
        let mut want = parse_answer(&expected_lines);
        // Map the README's ids and address onto this run's.
        for value in want
            .headers
            .values_mut()
            .chain(std::iter::once(&mut want.body))
        {
            *value = value.replace(README_ADDR, &addr);
            for (theirs, ours) in &renamed {
                *value = value.replace(theirs, ours);
            }
        }
        if got.status.contains(" 201 ") {
            last_location = got.headers.get("location").cloned();
            // The new id is not known to the README yet: compare its shape.
            if let (Some(w), Some(g)) = (want.headers.get_mut("location"), &last_location) {
                if let (Some(theirs), Some(ours)) = (ids(w).pop(), ids(g).pop()) {
                    *w = w.replace(&theirs, &ours);
                }
            }
        }
        let context = format!("`{command}`\nREADME shows:\n{want:#?}\nbinary answered:\n{got:#?}");
        assert_eq!(got.status, want.status, "status line of {context}");
        for (name, value) in &want.headers {
            let Some(actual) = got.headers.get(name) else {
                panic!("header {name} missing from the answer to {context}");
            };
            if !VOLATILE.contains(&name.as_str()) {
                assert_eq!(actual, value, "header {name} of {context}");
            }
        }
        for name in got.headers.keys() {
            assert!(
                want.headers.contains_key(name) || OMITTED.contains(&name.as_str()),
                "header {name} is not in the README's answer to {context}"
            );
        }
        assert_eq!(got.body, want.body, "body of {context}");
    }
    assert!(
        !renamed.is_empty(),
        "the walk-through never created an upload"
    );
    drop(server);
}
