#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use super::*;

fn origin() -> Origin {
    Origin {
        facility: 13,
        hostname: "soc-1".into(),
        app_name: "trustchain-verifier".into(),
        proc_id: "42".into(),
    }
}

fn change(device_id: &str, reason: &str) -> StateChange {
    StateChange {
        sequence: 12,
        device_id: device_id.into(),
        previous: DeviceState::Trusted,
        current: DeviceState::Untrusted,
        reason: reason.into(),
        result_jwt: String::new(),
        at_unix_millis: 1_764_873_022_123,
    }
}

/// Parses the structured data of a message as RFC 5424 section 6.3 reads it: the elements, each
/// (SD-ID, params with values unescaped), and the MSG after them.
type Element = (String, Vec<(String, String)>);

fn parse_sd(after_header: &str) -> (Vec<Element>, String) {
    let mut elements = Vec::new();
    let mut chars = after_header.chars().peekable();
    while chars.peek() == Some(&'[') {
        chars.next();
        let mut id = String::new();
        while let Some(&c) = chars.peek() {
            if c == ' ' || c == ']' {
                break;
            }
            id.push(c);
            chars.next();
        }
        let mut params = Vec::new();
        loop {
            match chars.next() {
                Some(']') => break,
                Some(' ') => {
                    let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert_eq!(chars.next(), Some('"'));
                    let mut value = String::new();
                    loop {
                        match chars.next().unwrap() {
                            '\\' => value.push(chars.next().unwrap()),
                            '"' => break,
                            ']' => panic!("an unescaped ] inside a value"),
                            c => value.push(c),
                        }
                    }
                    params.push((name, value));
                }
                other => panic!("unexpected {other:?} in an SD element"),
            }
        }
        elements.push((id, params));
    }
    assert_eq!(chars.next(), Some(' '));
    (elements, chars.collect())
}

#[test]
fn a_message_has_the_rfc5424_header_and_the_change_in_structured_data() {
    let message = format_message(&origin(), &change("gw-1", "boot_log_replay: PCR 4"));
    // facility 13 * 8 + severity 2 (critical)
    let header = "<106>1 2025-12-04T18:30:22.123Z soc-1 trustchain-verifier 42 alert ";
    assert!(message.starts_with(header), "{message}");
    let (elements, msg) = parse_sd(&message[header.len()..]);
    assert_eq!(elements.len(), 1);
    assert_eq!(elements[0].0, SD_ID);
    assert_eq!(
        elements[0].1,
        vec![
            ("sequence".to_string(), "12".to_string()),
            ("device".into(), "gw-1".into()),
            ("previous".into(), "trusted".into()),
            ("current".into(), "untrusted".into()),
        ]
    );
    assert_eq!(
        msg,
        "device gw-1 trusted -> untrusted: boot_log_replay: PCR 4"
    );
    assert_eq!(
        frame(&message),
        format!("{} {message}", message.len()).into_bytes()
    );
}

#[test]
fn a_hostile_device_id_cannot_close_the_element_add_a_parameter_or_start_a_message() {
    let hostile = "gw\"] [evil@1 current=\"trusted\"]\\\n<14>1 - forged - - - - trusted\u{202e}";
    let message = format_message(&origin(), &change(hostile, "x\r\n<14>1 forged"));
    assert!(!message.contains('\n') && !message.contains('\r'));
    assert!(!message.contains('\u{202e}'));
    let header = "<106>1 2025-12-04T18:30:22.123Z soc-1 trustchain-verifier 42 alert ";
    let (elements, msg) = parse_sd(&message[header.len()..]);
    assert_eq!(elements.len(), 1, "{message}");
    let params = &elements[0].1;
    assert_eq!(params.len(), 4, "{message}");
    assert_eq!(params[1].1, escape(hostile));
    assert_eq!(params[3], ("current".into(), "untrusted".into()));
    assert!(msg.ends_with(": x\\r\\n<14>1 forged"), "{msg}");
}

#[test]
fn sd_values_escape_quote_backslash_and_bracket_and_header_fields_fall_back_to_nil() {
    assert_eq!(sd_value(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
    assert_eq!(sd_value("a\nb"), "a\\\\nb");
    assert_eq!(header_field("soc 1", 255), "-");
    assert_eq!(header_field("", 255), "-");
    assert_eq!(header_field("h\u{e9}", 255), "-");
    assert_eq!(header_field("soc-1", 255), "soc-1");
}

#[test]
fn a_long_reason_is_cut_to_the_receivers_limit_on_a_character_boundary() {
    let reason = "\u{e9}".repeat(MAX_MESSAGE);
    let message = format_message(&origin(), &change("gw", &reason));
    assert!(message.len() <= MAX_MESSAGE && message.len() > MAX_MESSAGE - 4);
    let framed = frame(&message);
    let (length, rest) = framed.split_at(framed.iter().position(|&b| b == b' ').unwrap());
    assert_eq!(
        std::str::from_utf8(length)
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        rest.len() - 1
    );
}
