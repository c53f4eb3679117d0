//! PKCS#11 call latency for the metrics: `hkms_hsm_call_duration_seconds{call, mechanism}`.

use std::time::Instant;

use cryptoki_sys::CK_MECHANISM_TYPE;

use super::mechanisms;

/// Times one PKCS#11 call from its creation to its drop, whichever way the call ends.
pub(crate) struct CallTimer {
    call: &'static str,
    mechanism: &'static str,
    start: Instant,
}

impl CallTimer {
    /// Starts timing `call` (`C_DeriveKey`...) with `mechanism` (`none` for calls without one).
    pub(crate) fn start(call: &'static str, mechanism: &'static str) -> CallTimer {
        CallTimer {
            call,
            mechanism,
            start: Instant::now(),
        }
    }

    /// Starts timing `call` with a mechanism given by number.
    pub(crate) fn with(call: &'static str, mechanism: CK_MECHANISM_TYPE) -> CallTimer {
        CallTimer::start(call, mechanisms::metric_label(mechanism))
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        metrics::histogram!(
            "hkms_hsm_call_duration_seconds",
            "call" => self.call,
            "mechanism" => self.mechanism
        )
        .record(self.start.elapsed());
    }
}
