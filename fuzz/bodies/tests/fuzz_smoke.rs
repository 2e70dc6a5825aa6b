//! The fuzz targets' bodies (`visio_fuzz_bodies`, run under libFuzzer by `make fuzz`) on generated
//! inputs, on stable Rust, in every `make test`: arbitrary bytes, and near-valid inputs built from the
//! grammar each parser expects, where the interesting mistakes are.

use proptest::prelude::*;
use visio_fuzz_bodies as fuzz;

fn metric_line() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("livekit_participant_total".to_string()),
        Just("livekit_room_total".to_string()),
        Just("go_goroutines".to_string()),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        (0u64..5000).prop_map(|v| v.to_string()),
        Just("NaN".to_string()),
        Just("+Inf".to_string()),
        Just("-1".to_string()),
        Just("2.5".to_string()),
        Just("1e3".to_string()),
        Just("4294967296".to_string()),
        "[ -~]{0,6}",
    ];
    let labels = prop_oneof![
        Just(String::new()),
        Just("{node_id=\"ND_a\",node_type=\"MEDIA\"}".to_string()),
        Just("{a=\"b\\\"c\"}".to_string()),
        Just("{a=\"unterminated}".to_string()),
        "\\{[ -~]{0,10}\\}",
    ];
    prop_oneof![
        (name, labels, value).prop_map(|(n, l, v)| format!("{n}{l} {v}")),
        Just("# TYPE livekit_room_total gauge".to_string()),
        "[ -~]{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn agent_metrics_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz::agent_metrics(&data);
    }

    #[test]
    fn agent_metrics_on_near_valid_text(lines in proptest::collection::vec(metric_line(), 0..12)) {
        fuzz::agent_metrics(lines.join("\n").as_bytes());
    }

    #[test]
    fn duration_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..32)) {
        fuzz::duration(&data);
    }

    #[test]
    fn duration_on_near_valid_text(s in "([0-9]{0,20}(\\.[0-9]{0,3})?(ms|s|m|h|us|d|)){0,4}") {
        fuzz::duration(s.as_bytes());
    }

    #[test]
    fn pod_load_on_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzz::pod_load(&data);
    }

    #[test]
    fn pod_load_on_near_valid_json(p in any::<i64>(), r in any::<i64>(), c in proptest::option::of(any::<i64>()),
                                   d in any::<bool>(), extra in proptest::option::of("[a-z]{1,6}")) {
        let mut text = format!("{{\"participants\":{p},\"rooms\":{r},\"draining\":{d}");
        if let Some(c) = c { text += &format!(",\"capacity\":{c}"); }
        if let Some(e) = extra { text += &format!(",\"{e}\":1"); }
        text += "}";
        fuzz::pod_load(text.as_bytes());
    }
}
