use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::codec::PublishProperties;
use crate::codec::QoS;

fn route(text: &'static str) -> SubscriptionFilter {
    SubscriptionFilter::parse(&ByteString::from_static(text), true).expect("a valid filter")
}

fn roundtrip(frame: &Frame) -> Frame {
    let mut buf = BytesMut::new();
    encode(frame, &mut buf);
    let decoded = decode(&mut buf).expect("decodes").expect("whole");
    assert!(buf.is_empty(), "one frame, all of it");
    decoded
}

#[test]
fn control_frames_survive_the_wire() {
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        cluster: "demo".into(),
        node_id: "demo-0".into(),
        generation: 1_733_580_000_123,
    };
    match roundtrip(&Frame::Hello(hello.clone())) {
        Frame::Hello(back) => assert_eq!(back, hello),
        other => panic!("got {other:?}"),
    }
    let routes = vec![route("a/#"), route("$share/g/b/+"), route("c")];
    match roundtrip(&Frame::RoutesChunk(routes.clone())) {
        Frame::RoutesChunk(back) => assert_eq!(back, routes),
        other => panic!("got {other:?}"),
    }
    match roundtrip(&Frame::RouteDelta {
        version: 42,
        added: false,
        route: route("$share/g/x"),
    }) {
        Frame::RouteDelta {
            version,
            added,
            route: back,
        } => assert_eq!((version, added, back), (42, false, route("$share/g/x"))),
        other => panic!("got {other:?}"),
    }
    match roundtrip(&Frame::ForwardAck {
        stream: u64::MAX,
        seq: 9,
    }) {
        Frame::ForwardAck { stream, seq } => assert_eq!((stream, seq), (u64::MAX, 9)),
        other => panic!("got {other:?}"),
    }
}

#[test]
fn a_forwarded_message_keeps_what_subscribers_see() {
    let mut message = Message::new("t/1", "payload", QoS::ExactlyOnce, true);
    message.properties = PublishProperties {
        content_type: Some(ByteString::from_static("text/plain")),
        user_properties: vec![(ByteString::from_static("k"), ByteString::from_static("v"))],
        ..PublishProperties::default()
    };
    let message = message.with_expiry_interval(Some(60));
    let frame = Frame::Forward(Forward {
        stream: 0xfeed_beef,
        seq: 17,
        message: std::sync::Arc::new(message),
        direct: true,
        groups: vec![route("$share/g/t/+")],
    });
    let Frame::Forward(back) = roundtrip(&frame) else {
        panic!("not a forward");
    };
    assert_eq!((back.stream, back.seq), (0xfeed_beef, 17));
    assert!(back.direct);
    assert_eq!(back.groups, [route("$share/g/t/+")]);
    let m = back.message;
    assert_eq!(
        (&*m.topic, &m.payload[..], m.qos, m.retain),
        ("t/1", &b"payload"[..], QoS::ExactlyOnce, true)
    );
    assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(m.properties.user_properties.len(), 1);
    let left = m
        .remaining_expiry(std::time::Instant::now())
        .expect("expires");
    assert!(
        (59..=60).contains(&left),
        "expiry travels as what is left: {left}"
    );
    assert_eq!(
        m.properties.message_expiry_interval, None,
        "kept as expires_at"
    );
}

#[test]
fn retained_writes_and_deletions_survive_the_wire() {
    let stamp = RetainStamp {
        millis: 1_733_580_000_123,
        origin: std::sync::Arc::from("demo-1"),
    };
    let message = std::sync::Arc::new(Message::new("r/1", "kept", QoS::AtLeastOnce, true));
    for message in [Some(message), None] {
        let write = RetainedWrite {
            topic: ByteString::from_static("r/1"),
            stamp: stamp.clone(),
            message,
        };
        let Frame::Retained(back) = roundtrip(&Frame::Retained(write.clone())) else {
            panic!("not a retained write");
        };
        assert_eq!((&back.topic, &back.stamp), (&write.topic, &write.stamp));
        assert_eq!(
            back.message.map(|m| m.payload.clone()),
            write.message.map(|m| m.payload.clone())
        );
    }
}

#[test]
fn a_frame_arrives_in_pieces() {
    let mut whole = BytesMut::new();
    encode(&Frame::RoutesBegin { version: 7 }, &mut whole);
    encode(&Frame::RoutesEnd, &mut whole);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for byte in whole.iter() {
        buf.extend_from_slice(&[*byte]);
        while let Some(frame) = decode(&mut buf).expect("valid") {
            frames.push(frame.name());
        }
    }
    assert_eq!(frames, ["routes_begin", "routes_end"]);
}

#[test]
fn bad_frames_are_errors_not_panics() {
    let cases: [(&[u8], WireError); 4] = [
        (&[0, 0, 0, 1, 99], WireError::UnknownKind(99)),
        (&[0, 0, 0, 2, kind::ROUTES_BEGIN, 1], WireError::Truncated),
        (&[0, 0, 0, 2, kind::ROUTES_END, 0], WireError::Trailing(1)),
        (
            &[0xff, 0xff, 0xff, 0xff],
            WireError::TooLarge(u32::MAX as usize),
        ),
    ];
    for (bytes, expected) in cases {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf).map(|f| f.map(|f| f.name())), Err(expected));
    }
    // A route that is not a valid filter.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0, 0, 0, 18, kind::ROUTE_DELTA]);
    buf.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 4]);
    buf.extend_from_slice(b"a/#b");
    assert!(matches!(decode(&mut buf), Err(WireError::Route(..))));
}

proptest! {
    /// Whatever a peer sends, decoding ends in a frame, a wait for more, or an error.
    #[test]
    fn random_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut buf) {}
    }

    /// A valid length and kind followed by random fields.
    #[test]
    fn random_bodies_never_panic(kind in 1u8..=25, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(body.len() as u32 + 1).to_be_bytes());
        buf.extend_from_slice(&[kind]);
        buf.extend_from_slice(&body);
        let _ = decode(&mut buf);
    }
}
