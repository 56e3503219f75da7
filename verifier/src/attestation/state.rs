//! A device's trust state, driven by one function.
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> Enrolled: enrollment accepted
//!     Enrolled --> Trusted: appraisal passed
//!     Enrolled --> Untrusted: appraisal failed
//!     Trusted --> Untrusted: appraisal failed
//!     Trusted --> TimedOut: no valid answer for N intervals
//!     Trusted --> Enrolled: verifier restarted (trust must rest on a fresh challenge)
//!     Trusted --> TimedOut: verifier restarted after the device's timeout window ran out
//!     Enrolled --> TimedOut: trusted before a restart, no fresh pass within its window
//!     TimedOut --> Trusted: fresh appraisal passed
//!     TimedOut --> Untrusted: appraisal failed
//!     Untrusted --> Trusted: operator cleared, then appraisal passed (or policy allows recovery)
//!     Untrusted --> Quarantined: policy action on failure
//!     Quarantined --> Enrolled: operator cleared
//!     Untrusted --> Enrolled: operator cleared
//!     Enrolled --> Decommissioned: operator
//!     Trusted --> Decommissioned: operator
//!     Untrusted --> Decommissioned: operator
//!     TimedOut --> Decommissioned: operator
//!     Quarantined --> Decommissioned: operator
//!     Decommissioned --> [*]
//! ```
//!
//! Untrusted is sticky: a later passing appraisal does not make a failed device trusted again
//! unless an operator cleared it or its policy allows recovery. Decommissioned is final.

use crate::device::DeviceState;

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    AppraisalPassed,
    AppraisalFailed,
    /// No valid answer for the configured number of intervals.
    Silent,
    /// Policy action on failure: cut the device off.
    Quarantine,
    /// An operator investigated and cleared the device.
    OperatorCleared,
    Decommission,
    /// The verifier restarted: trust established before no longer counts until a fresh pass.
    VerifierRestarted,
    /// A device trusted before the verifier restarted gave no fresh evidence within its timeout
    /// window, counted from its last pass before the restart (keylime#1888: silence across a
    /// restart never reads as trusted, nor as merely enrolled).
    SilentAfterRestart,
}

/// Policy knobs that change transitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// A failed device becomes trusted again after a passing appraisal, without an operator.
    pub may_recover: bool,
}

/// The next state. Returns the current state when the input changes nothing.
pub fn step(current: DeviceState, input: Input, recovery: Recovery) -> DeviceState {
    use DeviceState as S;
    match (current, input) {
        (S::Decommissioned, _) => S::Decommissioned,
        (_, Input::Decommission) => S::Decommissioned,
        (S::Quarantined, Input::OperatorCleared) => S::Enrolled,
        (S::Quarantined, _) => S::Quarantined,
        (S::Untrusted, Input::OperatorCleared) => S::Enrolled,
        (S::Untrusted, Input::AppraisalPassed) if recovery.may_recover => S::Trusted,
        (S::Untrusted, Input::Quarantine) => S::Quarantined,
        (S::Untrusted, _) => S::Untrusted,
        (_, Input::AppraisalFailed) => S::Untrusted,
        (_, Input::Quarantine) => S::Quarantined,
        (_, Input::AppraisalPassed) => S::Trusted,
        (S::Trusted | S::TimedOut, Input::Silent) => S::TimedOut,
        (S::Enrolled | S::Trusted | S::TimedOut, Input::SilentAfterRestart) => S::TimedOut,
        (S::Trusted, Input::VerifierRestarted) => S::Enrolled,
        (state, Input::Silent | Input::OperatorCleared | Input::VerifierRestarted) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceState as S;

    const STRICT: Recovery = Recovery { may_recover: false };

    #[test]
    fn untrusted_is_sticky_until_cleared() {
        let s = step(S::Trusted, Input::AppraisalFailed, STRICT);
        assert_eq!(s, S::Untrusted);
        assert_eq!(step(s, Input::AppraisalPassed, STRICT), S::Untrusted);
        assert_eq!(step(s, Input::Silent, STRICT), S::Untrusted);
        assert_eq!(
            step(s, Input::AppraisalPassed, Recovery { may_recover: true }),
            S::Trusted
        );
        let cleared = step(s, Input::OperatorCleared, STRICT);
        assert_eq!(cleared, S::Enrolled);
        assert_eq!(step(cleared, Input::AppraisalPassed, STRICT), S::Trusted);
    }

    #[test]
    fn timeout_is_distinct_and_recovers_on_a_fresh_pass() {
        let s = step(S::Trusted, Input::Silent, STRICT);
        assert_eq!(s, S::TimedOut);
        assert_eq!(step(s, Input::AppraisalPassed, STRICT), S::Trusted);
        assert_eq!(step(s, Input::AppraisalFailed, STRICT), S::Untrusted);
        // An enrolled device that never answered has never been trusted: it does not time out.
        assert_eq!(step(S::Enrolled, Input::Silent, STRICT), S::Enrolled);
    }

    #[test]
    fn a_restart_takes_trust_away_until_a_fresh_pass() {
        assert_eq!(
            step(S::Trusted, Input::VerifierRestarted, STRICT),
            S::Enrolled
        );
        assert_eq!(
            step(S::Untrusted, Input::VerifierRestarted, STRICT),
            S::Untrusted
        );
        assert_eq!(
            step(S::TimedOut, Input::VerifierRestarted, STRICT),
            S::TimedOut
        );
        assert_eq!(
            step(S::Enrolled, Input::AppraisalPassed, STRICT),
            S::Trusted
        );
    }

    #[test]
    fn silence_after_a_restart_times_out_and_never_softens_a_failure() {
        for state in [S::Enrolled, S::Trusted, S::TimedOut] {
            assert_eq!(step(state, Input::SilentAfterRestart, STRICT), S::TimedOut);
        }
        for state in [S::Untrusted, S::Quarantined, S::Decommissioned] {
            assert_eq!(step(state, Input::SilentAfterRestart, STRICT), state);
        }
        // FAIL -> silence -> PASS (keylime#1889): still untrusted.
        let silent = step(S::Untrusted, Input::Silent, STRICT);
        assert_eq!(step(silent, Input::AppraisalPassed, STRICT), S::Untrusted);
    }

    #[test]
    fn decommissioned_is_final() {
        for input in [
            Input::AppraisalPassed,
            Input::AppraisalFailed,
            Input::Silent,
            Input::Quarantine,
            Input::OperatorCleared,
            Input::Decommission,
            Input::VerifierRestarted,
            Input::SilentAfterRestart,
        ] {
            assert_eq!(
                step(S::Decommissioned, input, Recovery { may_recover: true }),
                S::Decommissioned
            );
        }
        assert_eq!(
            step(S::Quarantined, Input::AppraisalPassed, STRICT),
            S::Quarantined
        );
    }
}
