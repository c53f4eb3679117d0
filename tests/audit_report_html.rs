//! The auditor's HTML report end to end: a ministry node runs a 2-officer ceremony, diversifies
//! for a province and a city, refuses a request; an auditor exports the log with the CLI and
//! renders `audit report --html`; real headless Chromium then opens the file, and must show it
//! without a console message (no script runs, the CSP blocks nothing), with the tree and the
//! timeline in its DOM, and paint a screenshot that is not blank.
//!
//! Chromium comes from `scripts/setup-browser` (Debian's `chromium`). Without it the test
//! fails and says to run that script, unless `HKMS_SKIP_BROWSER_TESTS=1`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{TestNode, exported_key_sha256, hkms_bin, key_id_in, stderr, stdout};

const AUDITOR: &str = "hkms://auditor/national/000000/auditor-1";
const WINDOW: &str = "hkms://window/municipal/440100/w1";
/// The environment variable that lets a machine without Chromium skip the browser checks.
const SKIP: &str = "HKMS_SKIP_BROWSER_TESTS";
/// The screenshot's size.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 2000;

/// The browser, or `None` when the browser checks are skipped; fails when it is missing.
fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if std::env::var(SKIP).is_ok_and(|v| v == "1") {
        eprintln!("{SKIP}=1: skipped the browser checks of the HTML report");
        return None;
    }
    Some(found.unwrap_or_else(|| {
        panic!(
            "Chromium is not installed: run scripts/setup-browser (it installs Debian's \
             `chromium`), or set {SKIP}=1 to skip the browser checks"
        )
    }))
}

/// Runs headless Chromium on `page` with `args` (`--dump-dom`, `--screenshot=…`), in a fresh
/// profile, with nothing that reaches the network; returns its output.
fn run_chromium(browser: &Path, page: &Path, args: &[String]) -> Output {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .current_dir(profile.path())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// The console lines in Chromium's log: with `--enable-logging=stderr`, every console message
/// of the page (a script error, a CSP violation, console.log) is a line with `:CONSOLE`.
fn console_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

/// A page that breaks the rules on purpose: a script the CSP blocks, an image from the
/// network, a script error. The console check must see it, or it proves nothing.
const BROKEN_PAGE: &str = "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
    <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\">\
    <title>broken</title></head><body><p>broken</p>\
    <script>console.error('blocked')</script>\
    <img src=\"https://example.invalid/x.png\" alt=\"\"></body></html>";

/// The part of `dom` inside the element that `open` starts, up to `close`.
fn part<'a>(dom: &'a str, open: &str, close: &str) -> &'a str {
    let from = dom
        .find(open)
        .unwrap_or_else(|| panic!("{open} not in the DOM: {dom}"));
    let rest = &dom[from..];
    &rest[..rest.find(close).unwrap_or(rest.len())]
}

#[tokio::test]
async fn an_auditor_hands_in_an_html_report_that_a_browser_shows() {
    let node = TestNode::start("national", "000000");
    // The ministry's ceremony: opened by one officer, approved by a second; the key is made.
    let o = node.cli(&[
        "ceremony",
        "open",
        "--op",
        "generate",
        "--key-type",
        "card-master",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let opened: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let ceremony = opened["id"].as_str().expect("ceremony id").to_string();
    let o = node.cli_as(&node.second_officer(), &["ceremony", "approve", &ceremony]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = key_id_in(&stdout(&o)).expect("the ceremony made a key");
    let derive = |parent: &str, region: &str| {
        let o = node.cli(&["keys", "derive", "--parent", parent, "--region", region]);
        assert!(o.status.success(), "{}", stderr(&o));
        key_id_in(&stdout(&o)).expect("derived key id")
    };
    let province = derive(&root, "440000");
    let city = derive(&province, "440100");
    // The city's key is suspended; a ceremony to retire it is opened, then cancelled.
    let o = node.cli(&["keys", "state", &city, "suspended"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = node.cli(&[
        "ceremony", "open", "--op", "manage", "--key-id", &city, "--state", "retired", "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let opened: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let cancelled = opened["id"].as_str().expect("ceremony id").to_string();
    let o = node.cli(&["ceremony", "cancel", &cancelled]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A service window may not generate keys: refused, and recorded.
    let o = node.cli_as(WINDOW, &["keys", "generate", "--type", "card-master"]);
    assert!(!o.status.success());

    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    let o = node.cli_as(
        AUDITOR,
        &["audit", "export", "--out", &bundle.display().to_string()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let key_sha256 = exported_key_sha256(&o);

    let page = dir.path().join("report.html");
    let report = |extra: &[&str]| {
        Command::new(hkms_bin())
            .args(["audit", "report", &bundle.display().to_string()])
            .args(["--expect-key-sha256", &key_sha256])
            .args(["--html", &page.display().to_string()])
            .args(extra)
            .output()
            .expect("run hkms audit report")
    };
    let o = report(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("VERIFIED: records 1.."),
        "{}",
        stderr(&o)
    );
    let html = std::fs::read_to_string(&page).expect("the report");
    assert!(html.contains("<p class=\"word\">VERIFIED</p>"));
    // An existing report is not replaced without --force, and the error names the file.
    let o = report(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&page.display().to_string()) && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    let o = report(&["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let Some(browser) = chromium() else {
        return;
    };

    // (a) The console check catches a broken page, and the report has no console line.
    let broken = dir.path().join("broken.html");
    std::fs::write(&broken, BROKEN_PAGE).expect("write the broken page");
    let control = run_chromium(&browser, &broken, &["--dump-dom".into()]);
    let control_log = stderr(&control);
    assert!(
        console_lines(&control_log).len() >= 2,
        "the console check sees no error on a broken page: {control_log}"
    );
    let shown = run_chromium(&browser, &page, &["--dump-dom".into()]);
    let log = stderr(&shown);
    assert!(
        console_lines(&log).is_empty(),
        "the report makes console messages: {:?}",
        console_lines(&log)
    );

    // (b) The DOM holds the tree (province under the root, city under the province) and the
    // timeline's bar for the ceremony.
    let dom = stdout(&shown);
    let verdict = part(&dom, "<section id=\"verdict\"", "</section>");
    assert!(
        verdict.contains("VERIFIED") && verdict.contains(&key_sha256),
        "{verdict}"
    );
    assert!(verdict.contains("matches"), "{verdict}");
    let tree = part(&dom, "<section id=\"key-tree\"", "</section>");
    let at = |id: &str| {
        tree.find(&format!("data-key-id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} not in the tree: {tree}"))
    };
    let depth = |id: &str| {
        let before = &tree[..at(id)];
        before.matches("<ul").count() - before.matches("</ul>").count()
    };
    assert_eq!(
        (depth(&root), depth(&province), depth(&city)),
        (1, 2, 3),
        "{tree}"
    );
    assert!(tree.contains("data-tier=\"national\""), "{tree}");
    assert!(tree.contains("data-tier=\"municipal\""), "{tree}");
    assert!(
        tree.contains(&format!("in ceremony <code>{ceremony}</code>")),
        "{tree}"
    );
    let timeline = part(&dom, "<section id=\"timeline\"", "</section>");
    assert!(
        timeline.contains("<svg id=\"timeline-chart\""),
        "{timeline}"
    );
    assert!(
        timeline.contains(&format!(
            "<g class=\"bar executed\" data-ceremony=\"{ceremony}\">"
        )),
        "{timeline}"
    );
    assert!(
        timeline.contains(&format!(
            "<g class=\"bar cancelled\" data-ceremony=\"{cancelled}\">"
        )),
        "{timeline}"
    );
    let city_card = part(tree, &format!("data-key-id=\"{city}\""), "</li>");
    assert!(city_card.contains(">suspended</span>"), "{city_card}");
    let approvals = part(&dom, "<section id=\"approvals\"", "</section>");
    let row = part(
        approvals,
        &format!("<tr data-ceremony=\"{ceremony}\">"),
        "</tr>",
    );
    assert!(row.contains("<td class=\"num\">2</td>"), "{row}");
    assert!(
        row.contains(&node.officer) && row.contains(&node.second_officer()),
        "{row}"
    );
    let refused = part(&dom, "<section id=\"refused\"", "</section>");
    assert!(
        refused.contains("PERMISSION_DENIED") && refused.contains(WINDOW),
        "{refused}"
    );

    // (c) A screenshot of the right size with something on it.
    let shot = dir.path().join("report.png");
    run_chromium(
        &browser,
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size={WIDTH},{HEIGHT}"),
            "--hide-scrollbars".into(),
        ],
    );
    // To look at them: HKMS_KEEP_REPORT=DIR keeps the report and its screenshot in DIR.
    if let Ok(keep) = std::env::var("HKMS_KEEP_REPORT") {
        for file in [&page, &shot] {
            let name = file.file_name().expect("a file name");
            std::fs::copy(file, Path::new(&keep).join(name)).expect("keep the report");
        }
    }
    let (width, height, colours, inked) = picture(&shot);
    assert_eq!((width, height), (WIDTH, HEIGHT));
    assert!(colours >= 50, "only {colours} colours: a blank page?");
    assert!(
        inked * 50 > u64::from(width) * u64::from(height),
        "only {inked} pixels are not white: a blank page?"
    );
}

/// A PNG's width, height, number of distinct colours and number of pixels that are not white.
fn picture(path: &Path) -> (u32, u32, usize, u64) {
    let file = std::fs::File::open(path).expect("the screenshot");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("buffer size")];
    let frame = reader.next_frame(&mut pixels).expect("a frame");
    let channels = frame.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    let mut inked = 0u64;
    for px in pixels[..frame.buffer_size()].chunks_exact(channels) {
        let rgb = match px {
            [g] | [g, _] => [*g, *g, *g],
            [r, g, b, ..] => [*r, *g, *b],
            [] => continue,
        };
        colours.insert(rgb);
        if rgb != [255, 255, 255] {
            inked += 1;
        }
    }
    (frame.width, frame.height, colours.len(), inked)
}
