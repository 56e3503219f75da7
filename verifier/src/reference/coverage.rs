//! Which boot events the reference values must bind. A policy that checks a kind of event
//! (boot applications in PCR 4, firmware blobs in PCRs 0 and 2, Secure Boot variables in PCR 7)
//! constrains that PCR, and every extended event of a constrained PCR must then be bound, whatever
//! its type: by a manifest digest of its kind or for its PCR, or by a data check that pins what
//! was extended to a known, harmless value (a zero separator, one of the PFP's boot-progress
//! action strings, the S-CRTM version). Otherwise a shim or kernel logged under another type
//! would skip the check written for its kind.

use crate::evidence::digest::HashAlgorithm;
use crate::evidence::eventlog::{
    EV_EFI_ACTION, EV_EFI_BOOT_SERVICES_APPLICATION, EV_EFI_BOOT_SERVICES_DRIVER,
    EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EFI_PLATFORM_FIRMWARE_BLOB2, EV_EFI_RUNTIME_SERVICES_DRIVER,
    EV_EFI_VARIABLE_AUTHORITY, EV_EFI_VARIABLE_DRIVER_CONFIG, EV_NO_ACTION, EV_S_CRTM_CONTENTS,
    EV_S_CRTM_VERSION, EV_SEPARATOR, Event,
};

use super::policy::BootRules;

/// The largest S-CRTM version a data check may bind: a version string, not an image (a PE's
/// bytes hashed as "data" would otherwise pass for a version).
pub const MAX_BOUND_DATA: usize = 256;

/// EV_EFI_ACTION strings the PFP (§10.4.4) defines for boot progress, which say nothing about
/// the platform's state. The others ("UEFI Debug Mode", "DMA Protection Disabled" in PCR 7,
/// vendors' own) report something a policy must decide on: in a constrained PCR a manifest has
/// to list them.
pub const BOOT_PROGRESS_ACTIONS: [&[u8]; 5] = [
    b"Calling EFI Application from Boot Option",
    b"Returning from EFI Application from Boot Option",
    b"Exit Boot Services Invocation",
    b"Exit Boot Services Returned with Failure",
    b"Exit Boot Services Returned with Success",
];

/// Whether the event is extended into a PCR (EV_NO_ACTION never is).
pub fn is_extended(event: &Event) -> bool {
    event.event_type != EV_NO_ACTION
}

/// A UEFI application started from a boot option (PCR 4: shim, GRUB, a UKI, the kernel).
pub fn is_boot_application(event: &Event) -> bool {
    event.event_type == EV_EFI_BOOT_SERVICES_APPLICATION
}

/// A UEFI driver image (PCR 2: option ROMs).
pub fn is_driver(event: &Event) -> bool {
    matches!(
        event.event_type,
        EV_EFI_BOOT_SERVICES_DRIVER | EV_EFI_RUNTIME_SERVICES_DRIVER
    )
}

/// A firmware volume or the S-CRTM itself (PCR 0, 2).
pub fn is_firmware_blob(event: &Event) -> bool {
    matches!(
        event.event_type,
        EV_EFI_PLATFORM_FIRMWARE_BLOB | EV_EFI_PLATFORM_FIRMWARE_BLOB2 | EV_S_CRTM_CONTENTS
    )
}

/// A Secure Boot variable (SecureBoot, PK, KEK, db, dbx, ...) or the authority that verified an
/// image: PCR 7 variable events.
pub fn is_secure_boot_variable(event: &Event) -> bool {
    event.pcr == 7
        && matches!(
            event.event_type,
            EV_EFI_VARIABLE_DRIVER_CONFIG | EV_EFI_VARIABLE_AUTHORITY
        )
}

/// The PCRs whose every extended event must be bound: those the policy lists in
/// `event_checked_pcrs`, and those holding a kind of event it checks (`checks_variables`: the
/// Secure Boot variable check is on and a manifest lists variables).
pub fn constrained_pcrs(rules: &BootRules, checks_variables: bool) -> Vec<u32> {
    let mut pcrs = rules.event_checked_pcrs.clone();
    if rules.check_boot_applications {
        pcrs.push(4);
    }
    if rules.check_firmware_blobs {
        pcrs.extend([0, 2]);
    }
    if checks_variables {
        pcrs.push(7);
    }
    pcrs.sort_unstable();
    pcrs.dedup();
    pcrs
}

/// Whether a data check binds the event: its digest in `bank` is the hash of its data, and the
/// data is a known value that carries no code (a zero separator, a boot-progress action, an
/// S-CRTM version string).
pub fn bound_by_data(event: &Event, bank: HashAlgorithm) -> bool {
    let data = event.data.as_slice();
    let kind_ok = match event.event_type {
        EV_SEPARATOR => data == [0, 0, 0, 0],
        EV_EFI_ACTION => BOOT_PROGRESS_ACTIONS.contains(&data),
        EV_S_CRTM_VERSION => data.len() <= MAX_BOUND_DATA,
        _ => false,
    };
    kind_ok && event.digest(bank) == Some(bank.hash(data).as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::eventlog::{Digests, EV_IPL, EV_POST_CODE};

    const BANK: HashAlgorithm = HashAlgorithm::Sha256;

    fn event(event_type: u32, data: &[u8], measured: &[u8]) -> Event {
        let digest = BANK.hash(measured);
        Event::new(
            1,
            4,
            event_type,
            Digests::from_values(&[(BANK, &digest)]).unwrap(),
            data,
        )
    }

    #[test]
    fn the_checked_kinds_constrain_their_pcrs_by_default() {
        let rules = BootRules::default();
        assert_eq!(constrained_pcrs(&rules, false), vec![4]);
        assert_eq!(constrained_pcrs(&rules, true), vec![4, 7]);
        let rules = BootRules {
            check_firmware_blobs: true,
            event_checked_pcrs: vec![5, 4],
            ..BootRules::default()
        };
        assert_eq!(constrained_pcrs(&rules, false), vec![0, 2, 4, 5]);
    }

    #[test]
    fn only_short_values_hashed_as_they_are_logged_are_bound_by_data() {
        let text = b"Calling EFI Application from Boot Option";
        assert!(bound_by_data(&event(EV_EFI_ACTION, text, text), BANK));
        assert!(!bound_by_data(&event(EV_EFI_ACTION, text, b"shim"), BANK));
        let image = vec![0x4d; 64];
        assert!(!bound_by_data(&event(EV_EFI_ACTION, &image, &image), BANK));
        let debug = b"UEFI Debug Mode";
        assert!(!bound_by_data(&event(EV_EFI_ACTION, debug, debug), BANK));
        let version = vec![0x31; MAX_BOUND_DATA + 1];
        assert!(!bound_by_data(
            &event(EV_S_CRTM_VERSION, &version, &version),
            BANK
        ));
        assert!(bound_by_data(&event(EV_SEPARATOR, &[0; 4], &[0; 4]), BANK));
        assert!(!bound_by_data(
            &event(EV_SEPARATOR, &[1, 0, 0, 0], &[1, 0, 0, 0]),
            BANK
        ));
        for retyped in [EV_IPL, EV_POST_CODE, EV_EFI_BOOT_SERVICES_APPLICATION] {
            assert!(!bound_by_data(&event(retyped, b"x", b"x"), BANK));
        }
    }
}
