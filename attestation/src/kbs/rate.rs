//! A token bucket for the requests that cost the KBS work (`auth` makes a
//! session, `attest` verifies signatures): at most `rate` a second on
//! average, `rate` at once. Beyond it a request is refused with 429 before
//! any work is done, so a flood cannot take the machine's CPU. The bucket
//! is shared by all clients (the server does not see peer addresses behind
//! hybrid vsock): a flooding client can crowd others out, but not take the
//! session table from them, which evicts the oldest unattested session.

use std::sync::Mutex;
use std::time::Instant;

/// The bucket.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// `per_second` requests a second (and as many at once).
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        RateLimit {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes one token; `false` when none is left.
    pub fn admit(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_beyond_the_rate_is_refused_then_refilled() {
        let limit = RateLimit::new(3);
        assert!((0..3).all(|_| limit.admit()));
        assert!(!limit.admit());
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(limit.admit(), "a token came back after a third of a second");
    }
}
