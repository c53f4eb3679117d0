//! Secrets leave the server's memory when their requests end: after a window's PIN unblock and
//! reload (card PINs, cardholder and agent ID numbers), an auditor's lookup of an ID number
//! (in another case than the window typed it) and a key entered by two custodians
//! (clear components), the test closes its connections and scans every writable mapping of
//! the running `hkms serve` process (`/proc/<pid>/mem`) for the planted values, in the forms
//! the server held them: text, PIN blocks, component bytes and the combined key.
//!
//! What may stay, and is not scanned for: values inside the token library's own memory
//! (SoftHSM2 wipes its secure buffers itself).

mod support;

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use hkms::proto::{
    self, audit_service_client::AuditServiceClient, card_service_client::CardServiceClient,
    ceremony_service_client::CeremonyServiceClient,
};
use support::{TestNode, aes_child, aes_kcv, make_token, node_config};

const WINDOW: &str = "hkms://window/municipal/440100/counter-1";
const AUDITOR: &str = "hkms://auditor/municipal/440100/auditor-1";
const UNBLOCK_PIN: &str = "804613";
const RELOAD_PIN: &str = "593017";
const CARDHOLDER_ID: &str = "HKMSWIPE7Q3Z9X1CARDHOLDER";
const AGENT_ID: &str = "HKMSWIPE5K8M2AGENTIDNUMBER";

/// The writable mappings of process `pid` that hold any memory (`/proc/PID/smaps`, `Rss` above
/// zero): heap, stacks, anonymous memory; reserved but untouched address space is left out.
fn writable_mappings(pid: u32) -> Vec<(u64, u64, String)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut out: Vec<(u64, u64, String)> = Vec::new();
    let mut current: Option<(u64, u64, String)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            let perms = fields.next().unwrap_or_default();
            let name = fields.nth(3).unwrap_or("[anonymous]");
            // Read-only mappings are the program's and libraries' code and constants.
            current = perms
                .starts_with("rw")
                .then(|| (start, end, format!("{name} ({perms})")));
        } else if first == "Rss:"
            && fields.next().is_some_and(|kb| kb != "0")
            && let Some(mapping) = current.take()
        {
            out.push(mapping);
        }
    }
    out
}

/// Where each of `needles` occurs in the writable memory of process `pid`: one line per hit,
/// naming the needle and the mapping. Each byte is read once, whatever the number of needles.
fn find_in_memory(pid: u32, needles: &[(&str, &[u8])]) -> Vec<String> {
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open /proc/pid/mem");
    let overlap = needles.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
    let mut hits = Vec::new();
    for (start, end, name) in writable_mappings(pid) {
        let mut at = start;
        while at < end {
            // In chunks that overlap by the longest needle, so nothing straddles unseen.
            let len = (end - at).min(1 << 22) as usize;
            let mut buf = vec![0u8; len];
            if mem.seek(SeekFrom::Start(at)).is_err() || mem.read_exact(&mut buf).is_err() {
                break;
            }
            for (what, needle) in needles {
                if let Some(i) = memchr::memmem::find(&buf, needle) {
                    hits.push(format!("{what} at {:#x} in {name}", at + i as u64));
                }
            }
            if at + len as u64 >= end || len <= overlap {
                break;
            }
            at += (len - overlap) as u64;
        }
    }
    hits.dedup();
    hits
}

/// The scan reads the server's heap: the node's folder, which it holds for its whole life, is
/// found.
fn assert_scan_sees_the_heap(node: &TestNode, pid: u32) {
    use std::os::unix::ffi::OsStrExt;
    let folder = node.dir.path().as_os_str().as_bytes();
    assert!(
        !find_in_memory(pid, &[("the node's folder", folder)]).is_empty(),
        "the scan cannot see the server's memory"
    );
}

/// Scans until none of `secrets` is found or 10 s have passed (the server frees a closed
/// connection's buffers on its own schedule); returns what is still there.
fn left_in_memory(pid: u32, secrets: &[(&str, Vec<u8>)]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let needles: Vec<(&str, &[u8])> = secrets.iter().map(|(w, v)| (*w, v.as_slice())).collect();
        let found = find_in_memory(pid, &needles);
        if found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn card_request(pin: &str) -> proto::CardCommandRequest {
    proto::CardCommandRequest {
        card_serial: "1234567890ABCDEF".into(),
        challenge: "0123456789ABCDEF".into(),
        pin: pin.into(),
        served_by: "Li Wei".into(),
        cardholder_id: CARDHOLDER_ID.into(),
        agent_id: AGENT_ID.into(),
        ..Default::default()
    }
}

/// Runs `client` on a runtime of its own and drops it after, as a client program that exits:
/// its connections close, and the server ends its side of them.
fn as_a_client_program<F: std::future::Future<Output = ()>>(client: F) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(client);
    drop(runtime);
}

#[test]
fn pins_and_id_numbers_are_gone_from_memory_once_the_window_disconnects() {
    // A city node with known card masters.
    let tokens = tempfile::tempdir().expect("tempdir");
    let token = make_token(&tokens.path().join("softhsm"), "guangzhou");
    let pkcs11 = support::init_pkcs11(&token);
    let root = hex::decode("00112233445566778899AABBCCDDEEFF").expect("hex");
    let master = aes_child(&aes_child(&root, "440000"), "440100");
    let dir = tempfile::tempdir().expect("tempdir");
    support::plant_card_masters(&pkcs11, &token, dir.path(), "440100", &master, &master);
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        node_config("440100", "municipal", "440100", &token),
    )
    .expect("config");
    let node = TestNode::start_in(dir, token, config);
    let pid = node.pid().expect("running");

    as_a_client_program(async {
        let mut window = CardServiceClient::new(node.channel_as(WINDOW).await);
        window
            .unblock_pin(card_request(UNBLOCK_PIN))
            .await
            .expect("unblock");
        window
            .reload_pin(card_request(RELOAD_PIN))
            .await
            .expect("reload");
        let mut auditor = AuditServiceClient::new(node.channel_as(AUDITOR).await);
        let found = auditor
            .find_id_number(proto::FindIdNumberRequest {
                id_number: CARDHOLDER_ID.to_ascii_lowercase(),
                from_seq: 0,
            })
            .await
            .expect("look the cardholder up")
            .into_inner();
        assert_eq!(found.seqs.len(), 2, "{found:?}");
    });
    let secrets = [
        ("the unblock PIN", UNBLOCK_PIN.as_bytes().to_vec()),
        ("the reload PIN", RELOAD_PIN.as_bytes().to_vec()),
        ("the unblock PIN block", pin_block_prefix(UNBLOCK_PIN)),
        ("the reload PIN block", pin_block_prefix(RELOAD_PIN)),
        ("the cardholder's ID", CARDHOLDER_ID.as_bytes().to_vec()),
        ("the agent's ID", AGENT_ID.as_bytes().to_vec()),
        (
            "the looked-up ID",
            CARDHOLDER_ID.to_ascii_lowercase().into_bytes(),
        ),
    ];
    assert_scan_sees_the_heap(&node, pid);
    let left = left_in_memory(pid, &secrets);
    assert!(
        left.is_empty(),
        "still in the server's memory:\n{}",
        left.join("\n")
    );
}

#[test]
fn key_components_are_gone_from_memory_once_the_custodians_disconnect() {
    let node = TestNode::start("national", "000000");
    let pid = node.pid().expect("running");
    let c1 = hex::decode("5A17C3E9024BD86F31A0E47C9B2D5F86").expect("hex");
    let c2 = hex::decode("C4E21B7F9A0356D8E7B4196A2C5F0D33").expect("hex");
    let combined: Vec<u8> = c1.iter().zip(&c2).map(|(a, b)| a ^ b).collect();
    as_a_client_program(async {
        let mut officer = CeremonyServiceClient::new(node.channel().await);
        let opened = officer
            .open_ceremony(proto::OpenCeremonyRequest {
                operation: proto::Operation::Generate.into(),
                params: [("key_type", "card-master"), ("components", "2")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("open")
            .into_inner();
        let mut second = CeremonyServiceClient::new(node.channel_as(&node.second_officer()).await);
        for (client, part) in [(&mut officer, &c1), (&mut second, &c2)] {
            client
                .enter_component(proto::EnterComponentRequest {
                    id: opened.id.clone(),
                    component: part.clone(),
                    kcv: aes_kcv(part),
                    ..Default::default()
                })
                .await
                .expect("component");
        }
    });
    assert_scan_sees_the_heap(&node, pid);
    let left = left_in_memory(
        pid,
        &[
            ("the first component", c1),
            ("the second component", c2),
            ("the combined key", combined),
        ],
    );
    assert!(
        left.is_empty(),
        "still in the server's memory:\n{}",
        left.join("\n")
    );
}

/// The PIN's length and BCD digits, as the command's PIN block starts.
fn pin_block_prefix(pin: &str) -> Vec<u8> {
    hkms::card::pin_block(pin)[..1 + pin.len() / 2].to_vec()
}
