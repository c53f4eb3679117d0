//! Every `hkms` command through the built binary, as its users run it: from a folder outside
//! the repository, with certificates that `hkms pki issue` made (no dev PKI to fall back on),
//! every file named on the command line. Each command's table and `--json`, its exit code, and
//! at least one failure per family whose message names what is wrong (the file, for a file).
//!
//! This file: the ministry's officers, admin and auditor, a province that receives a key
//! package, and the offline commands. tests/cli_city_commands.rs: a city's windows, card
//! issuance and auditors. The flows themselves are tested in depth elsewhere (keys_e2e,
//! ceremony_e2e, transport_e2e, card_services, policy_cli); here each command runs once or
//! twice.

mod support;

use serde_json::json;
use support::shell::{Caller, Shell, leaf_commands};
use support::{SO_PIN, TestNode, USER_PIN, default_policy, key_id_in, make_token, start_on};

const GD_SYSTEM: &str = "hkms://system/provincial/440000/gd-kms";

/// `path` as an argument.
fn arg(path: &std::path::Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Opens a ceremony as `opener` (`ceremony open --op OPEN`), has `approver` approve it, and
/// returns the done ceremony's JSON.
fn ceremony(
    sh: &Shell,
    node: &TestNode,
    opener: &Caller,
    approver: &Caller,
    open: &str,
) -> serde_json::Value {
    let opened = sh
        .client(node, opener, &format!("ceremony open --op {open} --json"))
        .json();
    let id = opened["id"].as_str().expect("ceremony id");
    let done = sh
        .client(node, approver, &format!("ceremony approve {id} --json"))
        .json();
    assert_eq!(done["state"], "done", "{done}");
    done
}

#[test]
fn ministry_and_province_run_every_client_command_with_their_own_files() {
    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let t_ministry = make_token(&softhsm, "ministry");
    let t_gd = make_token(&softhsm, "guangdong");
    make_token(&softhsm, "card-gd");
    let ministry = start_on(&t_ministry, "national", "000000", true);
    let guangdong = start_on(&t_gd, "provincial", "440000", false);
    let mut sh = Shell::new();
    sh.softhsm_conf = Some(t_ministry.conf.clone());
    let (m, gd) = (&ministry, &guangdong);

    // pki issue: each person's certificate, made by the CLI with the node's CA.
    let officer = sh.caller(m, "hkms://officer/national/000000/li-na", "li-na");
    let second = sh.caller(m, "hkms://officer/national/000000/wang-wei", "wang-wei");
    let admin = sh.caller(m, "hkms://admin/national/000000/zhao-lei", "zhao-lei");
    let auditor = sh.caller(m, "hkms://auditor/national/000000/chen-jie", "chen-jie");
    let gd_system = sh.caller(gd, GD_SYSTEM, "gd-kms");
    let pki = m.dir.path().join("pki");
    sh.run(&format!(
        "pki issue --dir no-pki --identity {} --out x",
        officer.identity
    ))
    .fails(1, &["no-pki/ca.pem", "No such file", "hkms pki init"]);
    sh.run(&format!(
        "pki issue --dir {} --identity officer/national --out x",
        arg(&pki)
    ))
    .fails(1, &["--identity"]);

    // The TLS trio: a certificate never goes with a key it was not given, and outside a dev
    // checkout nothing falls back on the dev PKI.
    let (url, cert, key) = (m.url(), arg(&officer.cert), arg(&officer.key));
    let ca = pki.join("ca.pem");
    sh.run(&format!("keys list --server {url} --cert {cert}"))
        .fails(1, &["--cert given without --key"]);
    sh.run(&format!("keys list --server {url} --key {key}"))
        .fails(1, &["--key given without --cert"]);
    let dev_ca = sh.path(".hkms/pki/ca.pem");
    sh.run(&format!(
        "keys list --server {url} --cert {cert} --key {key}"
    ))
    .fails(1, &["no --ca given", arg(&dev_ca), "--ca"]);
    sh.run(&format!("keys list --server {url}"))
        .fails(1, &["no --cert given", "--cert, --key and --ca"]);
    sh.run(&format!(
        "keys list --server {url} --cert nobody.pem --key {key} --ca {}",
        arg(&ca)
    ))
    .fails(1, &["cannot read nobody.pem", "No such file"]);
    // Files that hold the wrong thing are named too, not left to TLS's "transport error".
    let (ca_file, other_key) = (arg(&ca), arg(&second.key));
    sh.run(&format!(
        "keys list --server {url} --cert {cert} --key {cert} --ca {ca_file}"
    ))
    .fails(1, &[&format!("{cert} is not a PEM private key")]);
    sh.run(&format!(
        "keys list --server {url} --cert {cert} --key {other_key} --ca {ca_file}"
    ))
    .fails(
        1,
        &[&format!(
            "the key {other_key} is not the key of the certificate {cert}"
        )],
    );
    sh.run(&format!(
        "keys list --server {url} --cert {cert} --key {key} --ca {key}"
    ))
    .fails(1, &[&format!("{key} holds no PEM CA certificate")]);
    sh.run(&format!(
        "keys list --server http://{} --cert {cert} --key {key} --ca {}",
        m.addr,
        arg(&ca)
    ))
    .fails(1, &["https://"]);

    // keys generate: a national key is under dual control, said with the canonical code name.
    sh.client(m, &officer, "keys generate --type card-master")
        .fails(1, &["FAILED_PRECONDITION", "ceremony open"]);
    sh.client(m, &officer, "keys generate --type no-such-type")
        .fails(1, &["no-such-type"]);

    // ceremony open / approve / show / status, in a table and in JSON.
    let opened = sh
        .client(
            m,
            &officer,
            "ceremony open --op generate --key-type card-master --json",
        )
        .json();
    assert_eq!(opened["state"], "open");
    assert_eq!(opened["approvals"].as_array().map(Vec::len), Some(1));
    let cid = opened["id"].as_str().expect("id").to_string();
    sh.client(m, &officer, &format!("ceremony approve {cid}"))
        .fails(1, &["already approved"]);
    let table = sh.client(m, &second, &format!("ceremony approve {cid}"));
    assert!(
        table.ok().contains("state     done") && table.out.contains("approvals 2 of 2"),
        "{table}"
    );
    let root = key_id_in(&table.out).expect("the new key's id");
    let shown = sh
        .client(m, &auditor, &format!("ceremony show {cid} --json"))
        .json();
    assert_eq!(
        (shown["state"].as_str(), shown["operation"].as_str()),
        (Some("done"), Some("generate"))
    );
    let status = sh.client(m, &officer, &format!("ceremony status {cid}"));
    assert!(
        status
            .ok()
            .starts_with(&format!("ceremony {cid}  generate key_type=card-master")),
        "{status}"
    );
    sh.client(m, &officer, "ceremony show c-nope")
        .fails(1, &["c-nope"]);
    sh.client(m, &officer, "ceremony open --op dance")
        .fails(1, &["--op", "dance"]);

    // ceremony enter-component and cancel: a component whose KCV is not the sheet's is
    // refused, none on standard input is refused, one custodian's component counts.
    let parts = sh
        .client(
            m,
            &officer,
            "ceremony open --op generate --key-type pin-unblock --components 2 --json",
        )
        .json();
    let pid = parts["id"].as_str().expect("id").to_string();
    let component = "0123456789ABCDEF0123456789ABCDEF";
    let kcv = support::aes_kcv(&hex::decode(component).expect("hex"));
    let wrong = if kcv == "000000" { "000001" } else { "000000" };
    let enter = format!("ceremony enter-component {pid} --kcv");
    sh.client_input(m, &officer, &format!("{enter} {wrong}"), component)
        .fails(1, &["INVALID_ARGUMENT", "re-check the component"]);
    sh.client(m, &officer, &format!("{enter} {kcv}"))
        .fails(1, &["no key component (hex) on standard input"]);
    let entered = sh
        .client_input(m, &officer, &format!("{enter} {kcv} --json"), component)
        .json();
    assert_eq!(entered["components_entered"], 1, "{entered}");
    let cancelled = sh
        .client(m, &second, &format!("ceremony cancel {pid} --json"))
        .json();
    assert_eq!(cancelled["state"], "cancelled");
    sh.client(m, &second, &format!("ceremony cancel {pid}"))
        .fails(1, &["FAILED_PRECONDITION"]);

    // ceremony list: one JSON array; the table filtered by state.
    let all = sh.client(m, &auditor, "ceremony list --json").json();
    let ids: Vec<&str> = all
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(
        ids.contains(&cid.as_str()) && ids.contains(&pid.as_str()),
        "{all}"
    );
    let table = sh.client(m, &auditor, "ceremony list --state cancelled");
    assert!(
        table.ok().contains(&pid) && !table.out.contains(&cid),
        "{table}"
    );
    let none = sh
        .client(m, &auditor, "ceremony list --state expired --json")
        .json();
    assert_eq!(none, json!([]), "no ceremony is still one JSON value");
    sh.client(m, &auditor, "ceremony list --state over")
        .fails(1, &["--state", "over"]);

    // keys derive / list / show / state.
    let gd_key = sh
        .client(
            m,
            &officer,
            &format!("keys derive --parent {root} --region 440000 --json"),
        )
        .json();
    assert_eq!(
        (gd_key["tier"].as_str(), gd_key["region"].as_str()),
        (Some("provincial"), Some("440000"))
    );
    let gd_id = gd_key["id"].as_str().expect("id").to_string();
    let city = sh.client(
        m,
        &officer,
        &format!("keys derive --parent {gd_id} --region 440100"),
    );
    let city_id = key_id_in(city.ok()).expect("the city key's id");
    sh.client(
        m,
        &officer,
        &format!("keys derive --parent {gd_id} --region 4401"),
    )
    .fails(1, &["INVALID_ARGUMENT", "4401"]);
    let table = sh.client(m, &officer, "keys list");
    assert!(
        [&root, &gd_id, &city_id]
            .iter()
            .all(|id| table.ok().contains(id.as_str())),
        "{table}"
    );
    let listed = sh.client(m, &auditor, "keys list --json").json();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    let tree = sh.client(m, &officer, "keys list --tree");
    let lines: Vec<&str> = tree.ok().lines().collect();
    assert!(
        lines[0].starts_with(&format!("000000 card-master {root}")),
        "{tree}"
    );
    assert!(
        lines[2].starts_with(&format!("   └─ 440100 card-master {city_id}")),
        "{tree}"
    );
    let cities = sh
        .client(m, &officer, "keys list --tier municipal --json")
        .json();
    assert_eq!(cities[0]["id"], city_id.as_str());
    sh.client(m, &officer, "keys list --tier county")
        .fails(1, &["--tier", "county"]);
    let shown = sh
        .client(m, &officer, &format!("keys show {gd_id} --json"))
        .json();
    assert_eq!(shown["kcv"], gd_key["kcv"]);
    sh.client(m, &officer, "keys show k-00000000000000000000000000000000")
        .fails(1, &["NOT_FOUND"]);
    let state = format!("keys state {city_id}");
    let suspended = sh
        .client(m, &officer, &format!("{state} suspended --json"))
        .json();
    assert_eq!(suspended["state"], "suspended");
    sh.client(m, &officer, &format!("{state} active --expect retired"))
        .fails(1, &["FAILED_PRECONDITION"]);
    let active = sh.client(m, &officer, &format!("{state} active --expect suspended"));
    assert!(active.ok().contains("active"), "{active}");
    sh.client(m, &officer, &format!("{state} asleep"))
        .fails(1, &["asleep"]);

    // transport issue-card / list (ministry), load-card (province).
    let approval = ceremony(
        &sh,
        m,
        &officer,
        &second,
        "manage --action issue-card --region 440000",
    );
    let issue = format!(
        "transport issue-card --region 440000 --card card-gd --ceremony {}",
        approval["id"].as_str().expect("id")
    );
    sh.client(m, &officer, &issue)
        .fails(1, &["no card PIN on standard input"]);
    let card = sh
        .client_input(m, &officer, &format!("{issue} --json"), USER_PIN)
        .json();
    assert_eq!(
        (card["region"].as_str(), card["role"].as_str()),
        (Some("440000"), Some("issued"))
    );
    let (card_id, card_kcv) = (
        card["card_id"].as_str().expect("id"),
        card["kcv"].as_str().expect("kcv"),
    );
    let cards = sh.client(m, &officer, "transport list --json").json();
    assert_eq!(cards.as_array().map(Vec::len), Some(1), "{cards}");
    let table = sh.client(m, &officer, "transport list");
    assert!(
        table.ok().contains(card_id) && table.out.contains("issued"),
        "{table}"
    );
    assert_eq!(
        sh.client(gd, &gd_system, "transport list --json").json(),
        json!([])
    );
    let pins = format!("{USER_PIN}\n{SO_PIN}\n");
    let load = format!("transport load-card --card card-gd --card-id {card_id} --kcv");
    sh.client_input(gd, &gd_system, &format!("{load} 12345"), &pins)
        .fails(1, &["INVALID_ARGUMENT", "6 hex digits"]);
    let loaded = sh.client_input(gd, &gd_system, &format!("{load} {card_kcv}"), &pins);
    assert!(
        loaded.ok().starts_with(card_id) && loaded.out.contains("loaded"),
        "{loaded}"
    );

    // package export --key-id (a relative --out lands in the working folder) / inspect / import.
    let export = format!("package export --key-id {gd_id} --region 440000 --out gd.pkg");
    let exported = sh.client(m, &officer, &format!("{export} --json")).json();
    assert_eq!(exported["out"], "gd.pkg");
    let size = std::fs::metadata(sh.path("gd.pkg"))
        .map(|m| m.len())
        .expect("gd.pkg in the working folder");
    assert_eq!(exported["bytes"].as_u64(), Some(size));
    sh.client(m, &officer, &export)
        .fails(1, &["cannot write gd.pkg", "exists"]);
    let inspected = sh.run("package inspect gd.pkg --json").json();
    assert_eq!(inspected["header"], exported["header"]);
    assert!(
        sh.run("package inspect gd.pkg")
            .ok()
            .contains("wrapped key")
    );
    sh.run(&format!("package inspect {cert}"))
        .fails(1, &[cert, "is not a key package"]);
    sh.client(gd, &gd_system, "package import none.pkg")
        .fails(1, &["cannot read the package none.pkg", "No such file"]);
    let imported = sh
        .client(gd, &gd_system, "package import gd.pkg --json")
        .json();
    assert_eq!(
        (imported["kcv"].as_str(), imported["region"].as_str()),
        (gd_key["kcv"].as_str(), Some("440000"))
    );
    let show = format!("keys show {} --json", imported["id"].as_str().expect("id"));
    let shown = sh.client(gd, &gd_system, &show).json();
    assert_eq!(shown["origin"]["issuer_key_id"], gd_id.as_str(), "{shown}");
    sh.client(gd, &gd_system, "package import gd.pkg")
        .fails(1, &["ALREADY_EXISTS"]);

    // policy show / reload / check / explain.
    let policy = sh.client(m, &admin, "policy show --json").json();
    let sha = policy["sha256"].as_str().expect("sha256").to_string();
    assert_eq!(sha.len(), 64);
    let table = sh.client(m, &auditor, "policy show");
    assert!(table.ok().contains(&format!("sha256  {sha}")), "{table}");
    // A direct reload is refused while [ceremonies.manage] covers it; the ceremony reloads.
    sh.client(m, &admin, "policy reload --json")
        .fails(1, &["FAILED_PRECONDITION", "dual control"]);
    let open =
        format!("ceremony open --op manage --action reload-policy --policy-sha256 {sha} --json");
    let rid = sh.client(m, &admin, &open).json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    sh.client(m, &officer, &format!("ceremony approve {rid}"))
        .ok();
    let reloaded = sh
        .client(m, &second, &format!("ceremony approve {rid} --json"))
        .json();
    assert!(
        reloaded["result"]
            .as_str()
            .is_some_and(|r| r.contains(&sha)),
        "{reloaded}"
    );
    let policy_file = default_policy();
    let checked = sh
        .run(&format!("policy check {} --json", arg(&policy_file)))
        .json();
    assert_eq!(
        (checked["ok"].as_bool(), checked["sha256"].as_str()),
        (Some(true), Some(sha.as_str()))
    );

    // audit export / verify / report (the auditor, relative paths in the working folder).
    let export = sh
        .client(m, &auditor, "audit export --out bundle --json")
        .json();
    let key_sha = export["key_sha256"].as_str().expect("key sha256");
    sh.client(m, &auditor, "audit export --out bundle")
        .fails(1, &["bundle"]);
    sh.client(m, &officer, "audit export --out bundle-2")
        .fails(1, &["PERMISSION_DENIED"]);
    let ok = sh
        .run(&format!(
            "audit verify bundle --expect-key-sha256 {key_sha} --json"
        ))
        .json();
    assert_eq!(ok["verdict"], "OK");
    let unpinned = sh.run("audit verify bundle");
    assert!(
        unpinned.code == Some(3) && unpinned.out.starts_with("UNPINNED"),
        "{unpinned}"
    );
    sh.run("audit verify bundle --expect-key-sha256 abc")
        .fails(2, &["--expect-key-sha256"]);
    sh.run("audit verify no-bundle --json")
        .fails(2, &["no-bundle is not a bundle folder"]);
    std::fs::create_dir(sh.path("gutted")).expect("mkdir");
    let gutted = sh.run("audit verify gutted --json");
    assert_eq!(
        gutted.code,
        Some(1),
        "a bundle without its files is broken: {gutted}"
    );
    let verdict: serde_json::Value = serde_json::from_str(&gutted.out).expect("json");
    assert_eq!(verdict["verdict"], "BROKEN");
    assert!(
        verdict["message"]
            .as_str()
            .is_some_and(|m| m.contains("manifest.json")),
        "{verdict}"
    );
    let report = sh.run("audit report bundle");
    assert!(
        report.ok().starts_with('#') && report.out.contains(&cid),
        "{report}"
    );
    sh.run("audit report no-bundle").fails(1, &["no-bundle"]);

    // Local admin tools on the node's host: keys orphans, token info, token audit.
    let config = arg(&m.config);
    let orphans = sh
        .run(&format!("keys orphans --config {config} --json"))
        .json();
    assert_eq!(
        (&orphans["orphans"], &orphans["missing"]),
        (&json!([]), &json!({"keys": [], "card_objects": []})),
        "{orphans}"
    );
    let table = sh.run(&format!("keys orphans --config {config}"));
    assert!(table.ok().contains("0 orphans, 0 missing"), "{table}");
    sh.run("keys orphans --config nowhere.toml")
        .fails(2, &["nowhere.toml"]);
    let info = sh
        .run(&format!("token info --config {config} --json"))
        .json();
    assert_eq!(info["token"], "ministry");
    let table = sh.run(&format!("token info --config {config}"));
    assert!(table.ok().contains("token:        ministry"), "{table}");
    sh.run("token info --config nowhere.toml")
        .fails(1, &["nowhere.toml"]);
    let audit = sh
        .run(&format!("token audit --config {config} --json"))
        .json();
    assert_eq!(audit["violations"], json!([]), "{audit}");
    let table = sh.run(&format!("token audit --config {config}"));
    assert!(table.ok().contains(": 0 violations"), "{table}");
    sh.run("token audit --config nowhere.toml")
        .fails(2, &["nowhere.toml"]);
}

/// The commands that need no node: help, completions, pki, policy, serve's refusals.
#[test]
fn offline_commands_answer_from_any_folder() {
    let sh = Shell::new();
    assert!(sh.run("serve --help").ok().contains("--config"));
    sh.run("serve --config node.toml")
        .fails(1, &["node.toml", "No such file"]);
    assert!(sh.run("completions bash").ok().contains("enter-component"));
    sh.run("completions csh").fails(2, &["csh"]);

    // pki init / issue / revoke in a folder of the user's choosing.
    sh.run("pki init --dir pki --region 44").fails(1, &["44"]);
    assert!(!sh.path("pki").exists(), "a refused region writes nothing");
    let init = sh.run("pki init --dir pki --region 440100 --json").json();
    assert_eq!(init["ca"], "pki/ca.pem");
    let issued: Vec<&str> = init["issued"]
        .as_array()
        .expect("issued")
        .iter()
        .filter_map(|i| i["identity"].as_str())
        .collect();
    assert_eq!(
        issued,
        [
            "hkms://officer/municipal/440100/dev-officer",
            "hkms://admin/municipal/440100/dev-admin"
        ]
    );
    assert!(
        sh.run("pki init --dir pki --region 440100")
            .ok()
            .contains("dev PKI in pki")
    );
    let window = sh.run(
        "pki issue --dir pki --identity hkms://window/municipal/440100/counter-1 --out counter-1",
    );
    assert!(
        window
            .ok()
            .starts_with("hkms://window/municipal/440100/counter-1: pki/counter-1.pem"),
        "{window}"
    );
    // pki key-sha256: the roster's name for a certificate, as pki issue gave it too.
    let issued = sh
        .run("pki issue --dir pki --identity hkms://officer/municipal/440100/alice --out alice --json")
        .json();
    let keys = sh
        .run("pki key-sha256 --cert pki/alice.pem --cert pki/counter-1.pem --json")
        .json();
    assert_eq!(keys[0]["key_sha256"], issued["key_sha256"], "{keys}");
    assert_eq!(
        keys[1]["identity"],
        "hkms://window/municipal/440100/counter-1"
    );
    assert!(
        sh.run("pki key-sha256 --cert pki/alice.pem")
            .ok()
            .ends_with("pki/alice.pem  hkms://officer/municipal/440100/alice\n")
    );
    sh.run("pki key-sha256 --cert gone.pem")
        .fails(1, &["gone.pem"]);
    let revoke = "pki revoke --dir pki --cert pki/counter-1.pem --out crl.pem --number";
    let crl = sh.run(&format!("{revoke} 1 --json")).json();
    assert_eq!(crl["number"], 1);
    assert!(std::fs::read_to_string(sh.path("crl.pem")).is_ok_and(|t| t.contains("X509 CRL")));
    assert!(
        sh.run(&format!("{revoke} 2"))
            .ok()
            .contains("revocation list 2, 1 certificates")
    );
    sh.run("pki revoke --dir pki --cert gone.pem --number 3 --out crl.pem")
        .fails(1, &["gone.pem"]);

    // policy check / explain: 0 good, 1 refused; 0 allowed, 1 denied, 2 error.
    let policy = default_policy();
    assert!(
        sh.run(&format!("policy check {}", arg(&policy)))
            .ok()
            .starts_with("policy OK")
    );
    let refused = sh.run("policy check nope.toml --json");
    assert_eq!(refused.code, Some(1), "{refused}");
    let verdict: serde_json::Value = serde_json::from_str(&refused.out).expect("json");
    assert!(
        verdict["error"]
            .as_str()
            .is_some_and(|e| e.contains("nope.toml")),
        "{verdict}"
    );
    let explain = |region: &str, more: &str| {
        sh.run(&format!(
            "policy explain --as {GD_SYSTEM} --op derive --key-type card-master --region {region} --policy {} {more}",
            arg(&policy)
        ))
    };
    assert_eq!(explain("440100", "--json").json()["allowed"], true);
    let denied = explain("450100", "");
    assert!(
        denied.code == Some(1) && denied.out.starts_with("denied"),
        "{denied}"
    );
    explain("45", "").fails(2, &["45"]);
}

/// docs/cli.md is the reference of every command: each leaf command of `hkms --help` has its
/// section there, and the page names no command that does not exist. (Walking the help runs
/// every command's `--help` from a folder outside the repository, without ANSI escapes.)
#[test]
fn docs_cli_md_describes_every_command_and_no_other() {
    let sh = Shell::new();
    let commands: Vec<String> = leaf_commands(&sh)
        .iter()
        .map(|c| format!("hkms {}", c.join(" ")))
        .collect();
    assert!(commands.len() > 30, "{commands:?}");
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md"))
        .expect("docs/cli.md");
    let headings: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    for c in &commands {
        assert!(
            headings.contains(&c.as_str()),
            "docs/cli.md has no section `### `{c}``"
        );
    }
    for h in &headings {
        assert!(
            commands.iter().any(|c| c == h),
            "docs/cli.md describes `{h}`, which `hkms --help` does not list"
        );
    }
}
