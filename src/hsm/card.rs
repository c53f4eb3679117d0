//! Card commands in the HSM: derive the card's key from the city's master key and the card's
//! serial (a session object), encrypt the PIN block, compute the command MAC, destroy the card
//! key. The PIN block only passes through as the data of one `C_Encrypt`.

use crate::card::{self, BLOCK, CardCommand, MAC_LEN};
use crate::hierarchy::Factor;

use super::{HsmError, Pkcs11Token, mechanisms, templates};
use crate::hierarchy::{Algorithm, Kcv};

impl Pkcs11Token {
    /// Builds the complete command APDU for one card.
    pub fn card_command(
        &self,
        command: CardCommand,
        master_label: &str,
        serial: &Factor,
        challenge: &[u8; card::CHALLENGE_LEN],
        pin_block: &[u8; BLOCK],
    ) -> Result<Vec<u8>, HsmError> {
        let out = self.guarded(|| {
            let s = self.session()?;
            let master = self.key_handle(&s, master_label)?;
            let label = format!("hkms/card-key/{}", uuid::Uuid::new_v4().simple());
            let raw = &self.inner.raw;
            let card_key = raw.derive_encrypt_data(
                s.handle(),
                mechanisms::AES_ECB_ENCRYPT_DATA,
                master.handle(),
                &serial.data_block(),
                &templates::card_key_template(&label, false),
                &[],
            )?;
            let built = (|| -> Result<Vec<u8>, HsmError> {
                let encrypted: [u8; BLOCK] = raw
                    .encrypt(s.handle(), card_key, None, pin_block)?
                    .try_into()
                    .map_err(|_| HsmError::Unexpected {
                        what: "length of the encrypted PIN block".into(),
                    })?;
                let cbc = raw.encrypt(
                    s.handle(),
                    card_key,
                    Some(&card::mac_iv(challenge)),
                    &card::mac_input(command, &encrypted),
                )?;
                let last = cbc
                    .len()
                    .checked_sub(BLOCK)
                    .and_then(|at| cbc.get(at..at + MAC_LEN))
                    .ok_or_else(|| HsmError::Unexpected {
                        what: "length of the CBC-MAC".into(),
                    })?;
                let mac: [u8; MAC_LEN] = last.try_into().map_err(|_| HsmError::Unexpected {
                    what: "length of the MAC".into(),
                })?;
                Ok(card::apdu(command, &encrypted, &mac))
            })();
            // The card key lives only for this command, whatever happened.
            let destroyed = raw.destroy_object(s.handle(), card_key);
            if destroyed.is_err() {
                self.session_object_kept();
            }
            let apdu = built?;
            destroyed?;
            Ok(apdu)
        });
        self.session_object_destroyed();
        out
    }
}

impl Pkcs11Token {
    /// Derives a card's key from `master_label` for personalisation and wraps it under the
    /// bureau's trusted transport key (`card_id`); returns the wrapped key and its KCV. The card
    /// key is a session object, destroyed before returning.
    pub fn export_card_key(
        &self,
        master_label: &str,
        serial: &Factor,
        card_id: &str,
    ) -> Result<(Vec<u8>, Kcv), HsmError> {
        let out = self.guarded(|| {
            let wrap = self.wrap_pad()?;
            let s = self.session()?;
            let master = self.key_handle(&s, master_label)?;
            let transport = self.key_handle(&s, &super::transport::transport_label(card_id))?;
            let label = format!("hkms/card-export/{}", uuid::Uuid::new_v4().simple());
            let raw = &self.inner.raw;
            let key = raw.derive_encrypt_data(
                s.handle(),
                mechanisms::AES_ECB_ENCRYPT_DATA,
                master.handle(),
                &serial.data_block(),
                &templates::card_key_template(&label, true),
                &[],
            )?;
            let out = self.kcv_of(&s, key, Algorithm::Aes128).and_then(|kcv| {
                let wrapped = raw.wrap_key(s.handle(), wrap, transport.handle(), key)?;
                Ok((wrapped, kcv))
            });
            let destroyed = raw.destroy_object(s.handle(), key);
            if destroyed.is_err() {
                self.session_object_kept();
            }
            let out = out?;
            destroyed?;
            Ok(out)
        });
        // The session is back in the pool: the module may be initialised again now.
        self.session_object_destroyed();
        out
    }
}
