//! Waiting for what a test caused to show: a check run again and again until it holds, or a
//! failure that says what the last check saw.
use std::{
    ops::ControlFlow,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

/// The usual pause between two checks.
pub const EVERY: Duration = Duration::from_millis(50);

/// Runs `check` every `every` until it breaks with a result, for at most `within`. Past that,
/// fails naming `within` and what the last check continued with (what it saw). An error from
/// `check` ends the wait at once.
pub fn poll<T>(
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<ControlFlow<T, String>>,
) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        let seen = match check()? {
            ControlFlow::Break(found) => return Ok(found),
            ControlFlow::Continue(seen) => seen,
        };
        if Instant::now() > deadline {
            bail!("waited {within:?}: {seen}");
        }
        thread::sleep(every);
    }
}

/// [`poll`] for a condition: done once `holds` is true; else fails with "never: `what`".
pub fn wait_until(
    what: &str,
    within: Duration,
    mut holds: impl FnMut() -> Result<bool>,
) -> Result<()> {
    poll(within, EVERY, || {
        Ok(match holds()? {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(format!("never: {what}")),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_returns_what_the_check_found_once_it_holds() {
        let mut checks = 0;
        let found = poll(Duration::from_secs(5), Duration::ZERO, || {
            checks += 1;
            Ok(match checks {
                3 => ControlFlow::Break("third"),
                _ => ControlFlow::Continue(format!("check {checks}")),
            })
        });
        assert_eq!(found.unwrap(), "third");
        assert_eq!(checks, 3);
    }

    #[test]
    fn a_poll_that_never_holds_fails_with_what_the_last_check_saw() {
        let mut checks = 0;
        let failed = poll::<()>(Duration::from_millis(30), Duration::from_millis(5), || {
            checks += 1;
            Ok(ControlFlow::Continue(format!("check {checks} saw nothing")))
        })
        .unwrap_err()
        .to_string();
        assert!(checks > 1, "checked again until the time ran out");
        assert!(failed.starts_with("waited 30ms: check "), "{failed}");
        assert!(
            failed.ends_with(&format!("check {checks} saw nothing")),
            "{failed}"
        );
    }

    #[test]
    fn a_checks_error_ends_the_wait_at_once() {
        let mut checks = 0;
        let failed = wait_until("it", Duration::from_secs(60), || {
            checks += 1;
            anyhow::ensure!(checks < 2, "the daemon ended");
            Ok(false)
        })
        .unwrap_err();
        assert_eq!(failed.to_string(), "the daemon ended");
        assert_eq!(checks, 2);
    }
}
