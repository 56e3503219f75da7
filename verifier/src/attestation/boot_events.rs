//! Structural rules on the boot log (rule `boot_event_rules`): which event types may be extended
//! into which PCR, one well-formed separator per PCR, no Secure Boot configuration variable after
//! PCR 7's separator, and events whose digest must be the hash of their data.
//!
//! The (PCR, type) table is default-deny and follows where the TCG PC Client Platform Firmware
//! Profile (PFP, §3.3.4 "PCR usage" and §10.4.1 "Event types") puts each type. A pair is allowed
//! only where a check binds the event's digest: either [`Event::digest_check`] (the digest is the
//! hash of the data) or the reference values of `reference::boot` (which cover every extended
//! event of each PCR the policy constrains). A real firmware that puts an event where the PFP
//! does not would be a named vendor quirk option, never a wider table; none of the real logs in
//! the testdata needs one (`verifier/tests/event_rules_testdata.rs` checks every one of them).

use std::collections::BTreeMap;

use crate::evidence::eventlog::{self, EventLog};
use crate::verdict::{Failure, Rule, Verdict};

/// Whether an event type may be extended into a PCR. Default deny.
///
/// Tightened against the PFP (issue 20, item 4):
/// - EV_POST_CODE: PCR 0 only ("POST code, embedded SMM code, ACPI flash data": PFP §3.3.4.1
///   and Table 9); its digest is a firmware region's, bound by no data check, so anywhere else it
///   could carry any binary.
/// - PCR 4 (boot manager code and boot attempts, PFP §3.3.4.5): EV_EFI_BOOT_SERVICES_APPLICATION,
///   EV_EFI_ACTION and EV_SEPARATOR only. EV_IPL is the legacy-BIOS IPL (MBR) event, not a UEFI
///   one; EV_COMPACT_HASH and EV_EVENT_TAG are not PCR 4 events in the PFP. Each carried a
///   digest that no check bound, so a retyped shim or kernel skipped the reference values.
/// - PCR 7 (Secure Boot policy, PFP §3.3.4.8): EV_EFI_VARIABLE_DRIVER_CONFIG,
///   EV_EFI_VARIABLE_AUTHORITY, EV_EFI_ACTION, EV_SEPARATOR. EV_EFI_SPDM_FIRMWARE_CONFIG belongs
///   to PCRs 1 and 3 (PFP 1.06 §10.4.1); PCR 7's SPDM events are the device policy and authority
///   events, which this verifier does not accept yet.
pub fn event_allowed(pcr: u32, event_type: u32) -> bool {
    use eventlog::*;
    if event_type == EV_NO_ACTION {
        return true;
    }
    let common = matches!(event_type, EV_SEPARATOR | EV_EFI_ACTION | EV_ACTION);
    common
        || match pcr {
            0 => matches!(
                event_type,
                EV_POST_CODE
                    | EV_S_CRTM_VERSION
                    | EV_S_CRTM_CONTENTS
                    | EV_EFI_PLATFORM_FIRMWARE_BLOB
                    | EV_EFI_PLATFORM_FIRMWARE_BLOB2
                    | EV_EFI_HCRTM_EVENT
                    | EV_EFI_SPDM_FIRMWARE_BLOB
                    | EV_NONHOST_CODE
                    | EV_NONHOST_INFO
                    | EV_TABLE_OF_DEVICES
            ),
            1 => matches!(
                event_type,
                EV_EFI_VARIABLE_DRIVER_CONFIG
                    | EV_EFI_VARIABLE_BOOT
                    | EV_EFI_VARIABLE_BOOT2
                    | EV_EFI_HANDOFF_TABLES
                    | EV_EFI_HANDOFF_TABLES2
                    | EV_PLATFORM_CONFIG_FLAGS
                    | EV_TABLE_OF_DEVICES
                    | EV_CPU_MICROCODE
                    | EV_NONHOST_CONFIG
                    | EV_NONHOST_INFO
                    | EV_EFI_SPDM_FIRMWARE_CONFIG
            ),
            2 => matches!(
                event_type,
                EV_EFI_BOOT_SERVICES_DRIVER
                    | EV_EFI_RUNTIME_SERVICES_DRIVER
                    | EV_EFI_PLATFORM_FIRMWARE_BLOB
                    | EV_EFI_PLATFORM_FIRMWARE_BLOB2
                    | EV_EFI_SPDM_FIRMWARE_BLOB
                    | EV_NONHOST_CODE
                    | EV_NONHOST_INFO
                    | EV_COMPACT_HASH
            ),
            3 => matches!(
                event_type,
                EV_EFI_VARIABLE_DRIVER_CONFIG
                    | EV_EFI_SPDM_FIRMWARE_CONFIG
                    | EV_NONHOST_CONFIG
                    | EV_NONHOST_INFO
            ),
            4 => event_type == EV_EFI_BOOT_SERVICES_APPLICATION,
            5 => matches!(
                event_type,
                EV_EFI_GPT_EVENT
                    | EV_EFI_GPT_EVENT2
                    | EV_EFI_VARIABLE_BOOT
                    | EV_EFI_HANDOFF_TABLES
                    | EV_EVENT_TAG
            ),
            6 => matches!(event_type, EV_COMPACT_HASH | EV_EVENT_TAG),
            7 => matches!(
                event_type,
                EV_EFI_VARIABLE_DRIVER_CONFIG | EV_EFI_VARIABLE_AUTHORITY
            ),
            // Boot loaders and the OS (GRUB, shim's MOK, systemd-stub): IPL strings, tags, hashes.
            8..=15 => matches!(
                event_type,
                EV_IPL | EV_EVENT_TAG | EV_COMPACT_HASH | EV_EFI_VARIABLE_AUTHORITY
            ),
            _ => false,
        }
}

/// "event 41 (PCR 4, EV_EFI_BOOT_SERVICES_APPLICATION)".
fn event_subject(event: &eventlog::Event) -> String {
    crate::reference::boot::event_subject(event)
}

/// Structural rules on the boot log: allowed (PCR, type) pairs, separators, variables after the
/// separator, and events whose digest must be the hash of their data.
pub fn check_boot_events(log: &EventLog, verdict: &mut Verdict) {
    use eventlog::*;
    let mut separators: BTreeMap<u32, usize> = BTreeMap::new();
    for event in log
        .events
        .iter()
        .skip(if log.spec_id.is_some() { 1 } else { 0 })
    {
        if !event_allowed(event.pcr, event.event_type) {
            verdict.fail(
                Failure::new(Rule::BootEventRules, "event type not allowed in this PCR")
                    .subject(event_subject(event)),
            );
            continue;
        }
        if event.event_type == EV_SEPARATOR && event.pcr <= 7 {
            let count = separators.entry(event.pcr).or_default();
            *count += 1;
            if *count > 1 {
                verdict.fail(
                    Failure::new(Rule::BootEventRules, "duplicate separator")
                        .subject(event_subject(event)),
                );
            }
            let value = event.data.as_slice();
            if value != [0, 0, 0, 0] && value != *b"WBCL" {
                verdict.fail(
                    Failure::new(
                        Rule::BootEventRules,
                        "separator signals a firmware error or is malformed",
                    )
                    .subject(event_subject(event))
                    .values(hex::encode(value), "00000000"),
                );
            }
        }
        if event.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG
            && event.pcr == 7
            && separators.get(&7).copied().unwrap_or(0) > 0
        {
            verdict.fail(
                Failure::new(
                    Rule::BootEventRules,
                    "secure boot configuration variable measured after the separator",
                )
                .subject(event_subject(event)),
            );
        }
        if let Some(check) = event.digest_check()
            && !check.holds()
        {
            let banks: Vec<&str> = check.mismatched.iter().map(|b| b.name()).collect();
            verdict.fail(
                Failure::new(
                    Rule::BootEventRules,
                    format!(
                        "digest is not the hash of the event data ({})",
                        banks.join(", ")
                    ),
                )
                .subject(event_subject(event)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::eventlog::*;

    #[test]
    fn post_code_is_a_pcr_0_event_only() {
        assert!(event_allowed(0, EV_POST_CODE));
        for pcr in 1..=15 {
            assert!(!event_allowed(pcr, EV_POST_CODE), "PCR {pcr}");
        }
    }

    #[test]
    fn pcr_4_holds_boot_applications_actions_and_its_separator_only() {
        for allowed in [
            EV_EFI_BOOT_SERVICES_APPLICATION,
            EV_EFI_ACTION,
            EV_SEPARATOR,
        ] {
            assert!(event_allowed(4, allowed));
        }
        for retyped in [EV_IPL, EV_COMPACT_HASH, EV_EVENT_TAG, EV_POST_CODE] {
            assert!(!event_allowed(4, retyped), "{retyped:#x}");
        }
    }

    #[test]
    fn spdm_firmware_configuration_is_not_a_secure_boot_policy_event() {
        assert!(!event_allowed(7, EV_EFI_SPDM_FIRMWARE_CONFIG));
        assert!(event_allowed(1, EV_EFI_SPDM_FIRMWARE_CONFIG));
        assert!(event_allowed(3, EV_EFI_SPDM_FIRMWARE_CONFIG));
        assert!(event_allowed(7, EV_EFI_VARIABLE_AUTHORITY));
    }
}
