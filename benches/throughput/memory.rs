//! The memory run (`HKMS_BENCH_CARDS=N`): one long PersonaliseCards stream against the city
//! node while the server's resident set size is sampled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ISSUANCE;
use crate::report::{load_average, machine};
use crate::service::stream_cards;
use crate::setup::{issue_card, node_dir, plant_known, start_node};
use crate::support::{self, make_token};

/// The server process's resident set size in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `HKMS_BENCH_CARDS=N`: one PersonaliseCards stream of `n` cards against the city node, its
/// VmRSS sampled every second. No raw side.
pub fn run(n: usize) {
    println!(
        "hkms memory run: one PersonaliseCards stream of {n} cards against the city node; the \
         server's VmRSS is sampled every second"
    );
    println!("machine: {}", machine());
    println!("load average at the start: {}", load_average());
    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let city_token = make_token(&softhsm, "bench-city");
    let bureau_card = make_token(&softhsm, "bench-bureau-card");
    let pkcs11 = support::init_pkcs11(&city_token);
    let (city_dir, store) = node_dir(&city_token, "municipal", "440100");
    for (key_type, value) in [
        ("pin-unblock", "00112233445566778899AABBCCDDEEFF"),
        ("pin-reload", "FFEEDDCCBBAA99887766554433221100"),
    ] {
        let value = hex::decode(value).expect("hex");
        plant_known(&pkcs11, &city_token, &store, "440100", key_type, &value);
    }
    drop(store);
    let city = start_node(city_dir, &city_token);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bureau = issue_card(&rt, &city, "440100", &bureau_card);
    let pid = city.pid().expect("server pid");
    let start_rss = vm_rss_kib(pid).unwrap_or(0);
    println!("server pid {pid}; VmRSS before the stream: {start_rss} KiB");

    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = {
        let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut peak = start_rss;
            let mut tick = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                tick += 1;
                if let Some(rss) = vm_rss_kib(pid) {
                    peak = peak.max(rss);
                    if tick.is_multiple_of(10) {
                        let cards = done.load(Ordering::Relaxed);
                        println!(
                            "  {:>6} s: {cards} cards ({:.0} cards/s so far), VmRSS {rss} KiB, peak {peak} KiB",
                            tick,
                            cards as f64 / started.elapsed().as_secs_f64()
                        );
                    }
                }
            }
            peak
        })
    };
    let channel = rt.block_on(city.channel_as(ISSUANCE));
    let (ok, failed) = rt.block_on(stream_cards(channel, bureau, 0, n, Arc::clone(&done)));
    let elapsed = started.elapsed();
    // The stream's own batch record is written after its last card.
    std::thread::sleep(Duration::from_secs(1));
    let end_rss = vm_rss_kib(pid).unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler").max(end_rss);
    println!(
        "cards: {ok} good, {failed} failed in {:.1} s: {:.0} cards/s",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64()
    );
    println!("server VmRSS: start {start_rss} KiB, peak {peak} KiB, end {end_rss} KiB");
    let size = |path: std::path::PathBuf| -> u64 {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    println!(
        "on disk: the node's data folder (registry, WAL) {:.1} MiB, serve.log {:.1} MiB",
        size(city.dir.path().join("data")) as f64 / 1048576.0,
        std::fs::metadata(city.dir.path().join("serve.log")).map_or(0, |m| m.len()) as f64
            / 1048576.0
    );
    println!("load average at the end: {}", load_average());
    drop(city);
    drop(pkcs11);
}
