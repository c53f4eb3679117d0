//! The bare front-end: hkms's transport and the raw loop's PKCS#11 calls, nothing else.
//!
//! It answers `CardService/UnblockPin` with the server's own TLS set-up
//! (`hkms::server::tls`) and the same tonic settings as `hkms serve`, and makes the raw loop's
//! calls on the raw token. It has no identity, no policy, no registry and no audit record. No
//! front-end that must do more can be faster on the same machine, so its ratio to the raw loop
//! is the ceiling for the service's own.
//!
//! It runs on a runtime of its own (2 workers, as `hkms serve` on this machine) inside the
//! bench process, so the bench's CPU figure covers it, its clients and SoftHSM2.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use cryptoki::session::Session;
use hkms::config::TlsFiles;
use hkms::proto::{self, card_service_client::CardServiceClient, card_service_server::CardService};
use tokio::sync::oneshot;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::calls::UNBLOCK_CALLS;
use crate::raw::Raw;
use crate::report::{Best, print_table};
use crate::service::{connect, unblock_call};
use crate::setup::Bench;
use crate::support::{self, slot_of};
use crate::{Sweep, WINDOW, measure_line};

/// The bare front-end's lines, one table per `Mode`: UnblockPin through it against the raw loop
/// (the same raw loop as UnblockPin's, its operations numbered on from `numbers`).
pub fn lines(b: &mut Bench, sweep: &Sweep, numbers: &mut (usize, usize)) -> Vec<Best> {
    let mut bests = Vec::new();
    let bare_raw = Arc::new(Raw::new(&b.raw_city.module, b.wrap));
    let slot = slot_of(&b.pkcs11, &b.raw_city.label);
    let open = || b.pkcs11.open_rw_session(slot).expect("open session");
    let pki = b.city.dir.path().join("pki");
    let files = TlsFiles {
        cert: pki.join("server.pem"),
        key: pki.join("server.key"),
        client_ca: pki.join("ca.pem"),
        client_crl: None,
    };
    let (next, next_raw) = numbers;
    for mode in [
        Mode::OneThread(open()),
        Mode::PerRequest((0..b.max_clients).map(|_| open()).collect()),
    ] {
        let title = mode.title();
        let front = start(
            files.clone(),
            Arc::clone(&bare_raw),
            &b.raw_city_masters[0],
            mode,
        );
        let url = format!("https://{}", front.addr);
        let mut rows = Vec::new();
        for &c in &sweep.levels {
            let clients = connect(&b.rt, c, || async {
                let tls =
                    support::client_tls(&b.city.ca, Some(WINDOW), hkms::pki::Validity::days(1));
                CardServiceClient::new(
                    Channel::from_shared(url.clone())
                        .expect("url")
                        .tls_config(tls)
                        .expect("tls")
                        .connect()
                        .await
                        .expect("connect to the bare front-end"),
                )
            });
            let raw_op =
                |s: &Session, i: usize| b.raw.unblock(s, &b.raw_city_masters[0], i).map(|_| ());
            rows.push(measure_line(
                &b.rt,
                &sweep.settings,
                b.city_pid,
                None,
                sweep.settings.unblock_ops,
                clients,
                unblock_call,
                &mut b.city_sessions,
                &raw_op,
                next,
                next_raw,
            ));
        }
        drop(front);
        bests.extend(print_table(
            title,
            "gRPC/mTLS as the node (hkms::server::tls), the raw calls behind it; no identity, policy, registry or audit",
            UNBLOCK_CALLS,
            &rows,
            &[],
        ));
    }
    bests
}

/// How the bare front-end reaches the token.
pub enum Mode {
    /// Each request on a blocking thread of its own, with a session of its own (the raw loop's
    /// way, behind gRPC).
    PerRequest(Vec<Session>),
    /// Every request on one thread with one session, in arrival order (the node's batch
    /// thread, without the node).
    OneThread(Session),
}

impl Mode {
    /// The table's title; its first word names the line in the summary.
    pub fn title(&self) -> &'static str {
        match self {
            Mode::PerRequest(_) => {
                "UnblockPin-bare-per-request (the raw calls behind hkms's gRPC/mTLS alone, a \
                 blocking thread and session per request)"
            }
            Mode::OneThread(_) => {
                "UnblockPin-bare-one-thread (the raw calls behind hkms's gRPC/mTLS alone, all on \
                 one thread and session)"
            }
        }
    }
}

type Job = (
    proto::CardCommandRequest,
    oneshot::Sender<Result<Vec<u8>, String>>,
);

enum Work {
    PerRequest(Arc<Mutex<Vec<Session>>>),
    OneThread(mpsc::Sender<Job>),
}

struct BareCard {
    raw: Arc<Raw>,
    master: Arc<str>,
    work: Work,
}

/// A running bare front-end; dropping it stops the server and its thread.
pub struct Bare {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Bare {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Starts a bare front-end on 127.0.0.1 with the node's TLS files, deriving from `master`.
pub fn start(files: TlsFiles, raw: Arc<Raw>, master: &str, mode: Mode) -> Bare {
    let master: Arc<str> = Arc::from(master);
    let work = match mode {
        Mode::PerRequest(sessions) => Work::PerRequest(Arc::new(Mutex::new(sessions))),
        Mode::OneThread(session) => {
            let (tx, rx) = mpsc::channel::<Job>();
            let (raw, master) = (Arc::clone(&raw), Arc::clone(&master));
            std::thread::spawn(move || {
                for (r, reply) in rx {
                    let _ = reply.send(raw.unblock_card(
                        &session,
                        &master,
                        &r.card_serial,
                        &r.challenge,
                        &r.pin,
                    ));
                }
            });
            Work::OneThread(tx)
        }
    };
    let card = BareCard { raw, master, work };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("bare runtime");
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let config = hkms::server::tls::load(&files).expect("TLS files").config;
        let tls = std::sync::Arc::new(hkms::server::tls::Tls::new(files, config));
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(256)
            .add_service(proto::card_service_server::CardServiceServer::new(card))
            .serve_with_incoming(hkms::server::tls::incoming(listener, tls));
        tokio::spawn(server);
        addr
    });
    Bare {
        addr,
        runtime: Some(runtime),
    }
}

#[tonic::async_trait]
impl CardService for BareCard {
    type PersonaliseCardsStream = ReceiverStream<Result<proto::PersonaliseResponse, Status>>;

    async fn personalise_cards(
        &self,
        _: Request<tonic::Streaming<proto::PersonaliseRequest>>,
    ) -> Result<Response<Self::PersonaliseCardsStream>, Status> {
        Err(Status::unimplemented(
            "the bare front-end serves UnblockPin only",
        ))
    }

    async fn reload_pin(
        &self,
        _: Request<proto::CardCommandRequest>,
    ) -> Result<Response<proto::CardCommandResponse>, Status> {
        Err(Status::unimplemented(
            "the bare front-end serves UnblockPin only",
        ))
    }

    async fn unblock_pin(
        &self,
        request: Request<proto::CardCommandRequest>,
    ) -> Result<Response<proto::CardCommandResponse>, Status> {
        let r = request.into_inner();
        let apdu = match &self.work {
            Work::PerRequest(sessions) => {
                let (raw, master, sessions) = (
                    Arc::clone(&self.raw),
                    Arc::clone(&self.master),
                    Arc::clone(sessions),
                );
                tokio::task::spawn_blocking(move || {
                    let session = sessions.lock().expect("sessions").pop();
                    let Some(session) = session else {
                        return Err("no free session".to_string());
                    };
                    let out =
                        raw.unblock_card(&session, &master, &r.card_serial, &r.challenge, &r.pin);
                    sessions.lock().expect("sessions").push(session);
                    out
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?
            }
            Work::OneThread(tx) => {
                let (reply, answer) = oneshot::channel();
                tx.send((r, reply))
                    .map_err(|_| Status::unavailable("the PKCS#11 thread is gone"))?;
                answer
                    .await
                    .map_err(|_| Status::unavailable("the PKCS#11 thread is gone"))?
            }
        }
        .map_err(Status::internal)?;
        // The bare front-end is the ceiling without hkms's pipeline: it records nothing.
        #[allow(clippy::disallowed_methods)]
        Ok(Response::new(proto::CardCommandResponse {
            apdu,
            master_key_id: String::new(),
            master_version: 0,
        }))
    }
}
