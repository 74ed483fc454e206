//! Topic aliases (3.3.2.3.4), which live and die with one network connection [MQTT-3.3.2-7].

use bytestring::ByteString;

/// Aliases the client defined for its PUBLISHes to us.
#[derive(Debug, Default)]
pub struct InboundAliases {
    /// A boxed slice rather than a `Vec`: this is paid per connection, and most clients define
    /// no alias, so it rarely grows (and then once per new highest alias).
    topics: Box<[Option<ByteString>]>,
}

impl InboundAliases {
    /// Records `alias` for `topic`; the caller has checked 1 ..= maximum.
    pub fn set(&mut self, alias: u16, topic: ByteString) {
        let index = usize::from(alias);
        if self.topics.len() <= index {
            let mut topics = std::mem::take(&mut self.topics).into_vec();
            topics.resize(index + 1, None);
            self.topics = topics.into_boxed_slice();
        }
        self.topics[index] = Some(topic);
    }

    pub fn get(&self, alias: u16) -> Option<&ByteString> {
        self.topics.get(usize::from(alias))?.as_ref()
    }
}

/// Aliases we define for our PUBLISHes to the client, up to the client's Topic Alias Maximum. Aliases
/// are handed out first come, first served and never reassigned: the topics that appear first on a
/// connection are usually its busiest, and a stable mapping costs no extra bytes on the wire later.
/// The client's maximum is kept by the connection: this is one pointer until an alias is used.
#[derive(Debug, Default)]
pub struct OutboundAliases {
    /// Boxed and made on first use: most clients allow no aliases, and this is paid per connection.
    assigned: Option<Box<foldhash::HashMap<ByteString, u16>>>,
}

/// How to name the topic in one outgoing PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasUse {
    /// Send the topic without an alias.
    None,
    /// Send the topic and define this alias for it.
    Define(u16),
    /// Send an empty topic and this alias.
    Reuse(u16),
}

impl OutboundAliases {
    /// How to name `topic`, given the client's Topic Alias Maximum.
    pub fn resolve(&mut self, topic: &ByteString, maximum: u16) -> AliasUse {
        if maximum == 0 {
            return AliasUse::None;
        }
        let assigned = self.assigned.get_or_insert_default();
        if let Some(&alias) = assigned.get(topic) {
            return AliasUse::Reuse(alias);
        }
        let next = assigned.len() + 1;
        match u16::try_from(next) {
            Ok(alias) if alias <= maximum => {
                assigned.insert(topic.clone(), alias);
                AliasUse::Define(alias)
            }
            _ => AliasUse::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_aliases_are_defined_once_then_reused_up_to_the_maximum() {
        let mut aliases = OutboundAliases::default();
        let a = ByteString::from_static("a");
        let b = ByteString::from_static("b");
        assert_eq!(aliases.resolve(&a, 1), AliasUse::Define(1));
        assert_eq!(aliases.resolve(&a, 1), AliasUse::Reuse(1));
        assert_eq!(aliases.resolve(&b, 1), AliasUse::None);
    }

    #[test]
    fn no_aliases_when_the_client_allows_none() {
        let mut aliases = OutboundAliases::default();
        assert_eq!(
            aliases.resolve(&ByteString::from_static("a"), 0),
            AliasUse::None
        );
    }

    #[test]
    fn inbound_aliases_can_be_redefined() {
        let mut aliases = InboundAliases::default();
        aliases.set(3, ByteString::from_static("x"));
        aliases.set(3, ByteString::from_static("y"));
        assert_eq!(aliases.get(3).map(|t| &**t), Some("y"));
        assert!(aliases.get(2).is_none());
        assert!(aliases.get(60_000).is_none());
    }
}
