//! The PKCS#11 calls one request makes, node and raw loop alike: printed in the output's
//! header so a reader sees what the two sides compare.

/// The PKCS#11 calls of one request, node and raw alike (read from `src/hsm/card.rs`,
/// `src/hsm/mod.rs` and `src/hsm/transport.rs`). "find X" is C_FindObjectsInit,
/// C_FindObjects and C_FindObjectsFinal with CKA_CLASS = CKO_SECRET_KEY and CKA_LABEL = X, made
/// only the first time X is used: node and raw loop both keep the handle (`src/hsm/handles.rs`).
pub const UNBLOCK_CALLS: &[&str] = &[
    "find the city's pin-unblock master (hkms/<id>)",
    "C_DeriveKey CKM_AES_ECB_ENCRYPT_DATA (serial D||~D) -> session card key, encrypt-only",
    "C_EncryptInit + C_Encrypt CKM_AES_ECB (PIN block)",
    "C_EncryptInit + C_Encrypt CKM_AES_CBC (IV from the challenge: the command MAC)",
    "C_DestroyObject (the card key)",
];
pub const EXPORT_CALLS: &[&str] = &[
    "find the transport key (hkms/transport/<card>)",
    "find the key (hkms/<id>)",
    "C_WrapKey RFC 5649 (the token's number: CKM_AES_KEY_WRAP_PAD 0x210A on SoftHSM2) twice: length, then bytes",
    "find the package MAC key (hkms/package-mac/<card>)",
    "C_SignInit + C_Sign CKM_AES_CMAC over the package's signed bytes (header JSON + wrapped key)",
];
pub const DERIVE_CALLS: &[&str] = &[
    "find the parent province key (hkms/<id>)",
    "C_DeriveKey CKM_AES_ECB_ENCRYPT_DATA (region D||~D) -> token key hkms/<new id> (the node's template: token, private, sensitive, exportable, derive-only); it stays on the token",
    "C_SignInit + C_Sign CKM_AES_CMAC over 16 zero bytes (KCV)",
    "only on CKR_GENERAL_ERROR: find by label + C_DestroyObject, then again (at most 3 attempts)",
];
pub const CARD_CALLS: &[&str] = &[
    "per card, for the pin-unblock master and then the pin-reload master:",
    "  find the master (hkms/<id>), find the bureau's transport key (hkms/transport/<card>)",
    "  C_DeriveKey CKM_AES_ECB_ENCRYPT_DATA (serial D||~D) -> exportable session card key",
    "  C_SignInit + C_Sign CKM_AES_CMAC (KCV)",
    "  C_WrapKey RFC 5649 twice (length, bytes) under the transport key",
    "  C_DestroyObject (the card key)",
    "  find the package MAC key, C_SignInit + C_Sign CKM_AES_CMAC over the package",
];
/// What the node does besides those calls (none of it in the raw loop).
pub const NODE_EXTRA: &str = "the node adds, outside PKCS#11: TLS, protobuf, identity and policy, \
registry reads (SQLite), the audit record (SQLite, synchronous=FULL) before the reply, and every \
1000 records a checkpoint (find the audit-signing private key + C_SignInit/C_Sign CKM_ECDSA), also \
every 60 s when records are few";
