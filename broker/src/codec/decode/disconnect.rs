//! DISCONNECT (3.14) and AUTH (3.15): the packets that end or re-authenticate a connection. Both may
//! shorten to a remaining length of 0 in MQTT 5, meaning success without properties.

use super::super::error::DecodeError;
use super::super::packet::{
    Auth, AuthProperties, Disconnect, DisconnectProperties, ProtocolVersion,
};
use super::super::properties::{Property, Reader, read_properties, set_once};
use super::super::reason::ReasonCode;
use super::{check_auth_pair, reason_code, valid};

/// 3.x DISCONNECT has no variable header (its remaining length 0 is checked by the caller).
pub(super) fn disconnect(
    r: &mut Reader,
    protocol: ProtocolVersion,
) -> Result<Disconnect, DecodeError> {
    if !protocol.is_v5() || r.is_empty() {
        return Ok(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION));
    }
    let reason_code = reason_code(r, valid::DISCONNECT)?;
    let mut properties = DisconnectProperties::default();
    // A remaining length of 1 carries the reason code alone (3.14.2.2).
    if !r.is_empty() {
        read_properties(r, |prop| match prop {
            Property::SessionExpiryInterval(v) => {
                set_once(&mut properties.session_expiry_interval, v)
            }
            Property::ReasonString(v) => set_once(&mut properties.reason_string, v),
            Property::User(name, value) => {
                properties.user_properties.push((name, value));
                Ok(())
            }
            Property::ServerReference(v) => set_once(&mut properties.server_reference, v),
            _ => Err(DecodeError::Malformed(
                "property not allowed in DISCONNECT (2.2.2.2)",
            )),
        })?;
    }
    Ok(Disconnect {
        reason_code,
        properties,
    })
}

/// AUTH exists only in MQTT 5; the fixed header check refuses it at the older levels. The
/// Authentication Method is not required here: a remaining length of 0 leaves it out by design
/// (3.15.2.1), and the connection compares it with the one from CONNECT.
pub(super) fn auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut properties = AuthProperties::default();
    if r.is_empty() {
        return Ok(Auth {
            reason_code: ReasonCode::SUCCESS,
            properties,
        });
    }
    let reason_code = reason_code(r, valid::AUTH)?;
    if !r.is_empty() {
        read_properties(r, |prop| match prop {
            Property::AuthenticationMethod(v) => set_once(&mut properties.authentication_method, v),
            Property::AuthenticationData(v) => set_once(&mut properties.authentication_data, v),
            Property::ReasonString(v) => set_once(&mut properties.reason_string, v),
            Property::User(name, value) => {
                properties.user_properties.push((name, value));
                Ok(())
            }
            _ => Err(DecodeError::Malformed(
                "property not allowed in AUTH (2.2.2.2)",
            )),
        })?;
        check_auth_pair(
            properties.authentication_method.as_ref(),
            properties.authentication_data.as_ref(),
        )?;
    }
    Ok(Auth {
        reason_code,
        properties,
    })
}
