//! The coordination's clock: monotonic time for terms, deadlines and spacing; wall time
//! for the Leases' renewTime and the age of the others' Leases. The daemon runs on the
//! system's clocks; the coordination's tests run on tokio's paused clock, which moves
//! both at once, so that a lease duration passes in no time and exactly.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the coordination reads the time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// `None`: the system's clocks. Else tokio's clock, with the wall time it had when
    /// the clock was made (wall time then moves with tokio's clock).
    tokio_from: Option<(tokio::time::Instant, SystemTime)>,
}

impl Clock {
    /// The system's monotonic and wall clocks (the daemon's).
    pub fn system() -> Self {
        Clock { tokio_from: None }
    }

    /// Tokio's clock for both: on a paused runtime, time moves only when the test or
    /// tokio's auto-advance moves it.
    #[cfg(test)]
    pub fn tokio() -> Self {
        Clock {
            tokio_from: Some((tokio::time::Instant::now(), SystemTime::now())),
        }
    }

    /// Monotonic now.
    pub fn now(&self) -> Instant {
        match self.tokio_from {
            None => Instant::now(),
            Some(_) => tokio::time::Instant::now().into_std(),
        }
    }

    /// Wall-clock now.
    pub fn wall(&self) -> SystemTime {
        match self.tokio_from {
            None => SystemTime::now(),
            Some((at, wall)) => wall + at.elapsed(),
        }
    }

    /// Wall-clock now, in seconds since the Unix epoch.
    pub fn unix(&self) -> f64 {
        self.wall()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// Wall-clock now, as a Lease's time.
    pub fn micro(&self) -> MicroTime {
        let since = self
            .wall()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let stamp = k8s_openapi::jiff::Timestamp::UNIX_EPOCH
            .checked_add(since)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        MicroTime(stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_monotonic_and_wall_time_together() {
        let clock = Clock::tokio();
        let (t0, w0, m0) = (clock.now(), clock.unix(), clock.micro());
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now() - t0, Duration::from_secs(90));
        assert!(
            (clock.unix() - w0 - 90.0).abs() < 1e-6,
            "{}",
            clock.unix() - w0
        );
        let micros = clock.micro().0.as_microsecond() - m0.0.as_microsecond();
        assert_eq!(micros, 90_000_000);
    }

    #[test]
    fn the_system_clock_is_the_systems() {
        let clock = Clock::system();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((clock.unix() - unix).abs() < 5.0);
        let lease = clock.micro().0.as_second() as f64;
        assert!((lease - unix).abs() < 5.0);
    }
}
