//! Making a token for a new node (`hkms node init`): the module's free slot initialised with a
//! label and the security officer PIN, then the user PIN set by that officer. SoftHSM2 always
//! offers one uninitialised token; a hardware HSM's tokens are made with its vendor's tools.

use std::path::Path;

use cryptoki::session::UserType;
use secrecy::SecretString;

use super::{HsmError, TokenLocator, find_slot, load_module};

/// Whether the module has an initialised token labelled `label`. More than one is an error: a
/// node must find exactly one.
pub fn token_exists(module: &Path, label: &str) -> Result<bool, HsmError> {
    let ctx = load_module(module)?;
    match find_slot(&ctx, &TokenLocator::by_label(label)) {
        Ok(_) => Ok(true),
        Err(HsmError::TokenNotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Initialises the module's first uninitialised token as `label` with `so_pin`, and has the
/// security officer set its user PIN to `user_pin`. Returns the new token's serial.
pub fn init_token(
    module: &Path,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
) -> Result<String, HsmError> {
    let ctx = load_module(module)?;
    // Asking for every slot also has SoftHSM2 add a free one when none is left.
    let mut free = None;
    for slot in ctx.get_all_slots()? {
        match ctx.get_token_info(slot) {
            Ok(info) if !info.token_initialized() => {
                free = Some(slot);
                break;
            }
            _ => continue,
        }
    }
    let slot = free.ok_or_else(|| HsmError::Unsupported {
        what: format!(
            "making a token in {}: it offers no uninitialised token (make one with the \
             HSM's own tools and write [token] yourself)",
            module.display()
        ),
    })?;
    ctx.init_token(slot, so_pin, label)?;
    let session = ctx.open_rw_session(slot)?;
    session.login(UserType::So, Some(so_pin))?;
    let set = session.init_pin(user_pin);
    let _ = session.logout();
    set?;
    Ok(ctx
        .get_token_info(slot)?
        .serial_number()
        .trim_end()
        .to_string())
}
