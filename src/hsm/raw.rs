//! The PKCS#11 calls `cryptoki` 0.12 cannot express: `C_DeriveKey` with
//! `CKM_AES_ECB_ENCRYPT_DATA`/`CKM_DES3_ECB_ENCRYPT_DATA`, and the raw mechanism list and
//! mechanism info (cryptoki drops the numbers it has no name for). The module is loaded a
//! second time through `cryptoki-sys`; the dynamic loader hands back the same library, so
//! session and object handles from `cryptoki` are valid here.
//!
//! The module is public for the throughput bench (`benches/throughput/raw.rs`): its raw
//! PKCS#11 baseline calls the functions marked `pub` here, so that the loop it compares the
//! service against makes the node's calls through the node's own code, not a copy of it.

use std::path::Path;

use cryptoki::object::Attribute;
use cryptoki_sys::{
    CK_ATTRIBUTE, CK_FUNCTION_LIST, CK_KEY_DERIVATION_STRING_DATA, CK_MECHANISM, CK_MECHANISM_TYPE,
    CK_OBJECT_HANDLE, CK_SESSION_HANDLE, CK_SLOT_ID, CK_ULONG, CKR_OK,
};

use super::HsmError;
use super::timing::CallTimer;

/// The most bytes hkms allocates for a length a token reports: the values it reads (labels,
/// allowed mechanisms, wrapped keys) are far smaller, and a faulty or hostile module must not
/// make the node allocate what it likes.
pub(crate) const MAX_TOKEN_OUTPUT: usize = 64 * 1024;

/// `len` as reported by the token, if it is within [`MAX_TOKEN_OUTPUT`].
fn bounded_len(what: &str, len: cryptoki_sys::CK_ULONG) -> Result<usize, HsmError> {
    usize::try_from(len)
        .ok()
        .filter(|n| *n <= MAX_TOKEN_OUTPUT)
        .ok_or_else(|| HsmError::Unexpected {
            what: format!("{what} ({len} bytes; hkms reads at most {MAX_TOKEN_OUTPUT})"),
        })
}

/// An attribute whose value is itself a template, which `cryptoki`'s `Attribute` cannot hold:
/// `CKA_UNWRAP_TEMPLATE` or `CKA_DERIVE_TEMPLATE`, fixing what the keys a key makes will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedTemplate {
    /// The attribute type (`CKA_UNWRAP_TEMPLATE`, `CKA_DERIVE_TEMPLATE`).
    pub kind: cryptoki_sys::CK_ATTRIBUTE_TYPE,
    /// The attributes every key made through it must be given.
    pub attributes: Vec<Attribute>,
}

/// A template as the C array a call takes. Nested templates go just before a final
/// `CKA_MODIFIABLE=false`, which must stay last (see `templates::sealed`). The values point
/// into the `Attribute`s borrowed, and the nested arrays into buffers owned here.
pub(crate) struct CTemplate<'a> {
    outer: Vec<CK_ATTRIBUTE>,
    // Each inner array's heap buffer does not move when the Vec is moved in here.
    _inner: Vec<Vec<CK_ATTRIBUTE>>,
    _borrowed: std::marker::PhantomData<&'a [Attribute]>,
}

impl<'a> CTemplate<'a> {
    /// `template` with `nested` added.
    pub(crate) fn new(template: &'a [Attribute], nested: &'a [NestedTemplate]) -> CTemplate<'a> {
        let sealed_last = matches!(template.last(), Some(Attribute::Modifiable(_)));
        let (body, tail) = template.split_at(template.len() - usize::from(sealed_last));
        let mut outer: Vec<CK_ATTRIBUTE> = body.iter().map(CK_ATTRIBUTE::from).collect();
        let mut inner = Vec::with_capacity(nested.len());
        for n in nested {
            let mut array: Vec<CK_ATTRIBUTE> =
                n.attributes.iter().map(CK_ATTRIBUTE::from).collect();
            outer.push(CK_ATTRIBUTE {
                type_: n.kind,
                pValue: array.as_mut_ptr().cast(),
                ulValueLen: (array.len() * std::mem::size_of::<CK_ATTRIBUTE>()) as CK_ULONG,
            });
            inner.push(array);
        }
        outer.extend(tail.iter().map(CK_ATTRIBUTE::from));
        CTemplate {
            outer,
            _inner: inner,
            _borrowed: std::marker::PhantomData,
        }
    }

    fn as_mut_ptr(&mut self) -> *mut CK_ATTRIBUTE {
        self.outer.as_mut_ptr()
    }

    fn len(&self) -> CK_ULONG {
        self.outer.len() as CK_ULONG
    }
}

/// A mechanism without parameters.
pub(crate) fn plain_mechanism(mechanism: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    }
}

/// A second handle on a PKCS#11 module that `cryptoki` has loaded and initialised, with the
/// module's function list, for the calls `cryptoki` cannot make as hkms needs them. Public,
/// with the calls the node makes per request, for the throughput bench's raw baseline.
pub struct RawModule {
    // Keeps the library mapped for as long as `list` is used.
    _lib: cryptoki_sys::Pkcs11,
    list: *const CK_FUNCTION_LIST,
}

// SAFETY: the function list is a static table owned by the loaded library, which `_lib` keeps
// mapped; it is only read. The library was initialised by `cryptoki` with CKF_OS_LOCKING_OK, so
// its functions may be called from any thread (each session is used by one thread at a time).
unsafe impl Send for RawModule {}
// SAFETY: as above; shared references only read the table.
unsafe impl Sync for RawModule {}

impl RawModule {
    /// Takes another reference to the PKCS#11 module at `path` and reads its function list.
    /// The module must already be loaded and initialised in this process through `cryptoki`
    /// (as [`super::Pkcs11Token::open`] does, with OS locking): `load` does not call `C_Initialize`.
    pub fn load(path: &Path) -> Result<RawModule, HsmError> {
        let load_err = |reason: String| HsmError::ModuleLoad {
            path: path.to_path_buf(),
            reason,
        };
        // SAFETY: loading a PKCS#11 module runs its initialisers; the same module was already
        // loaded and initialised by `cryptoki`, so this only takes another reference to it.
        let lib =
            unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(|e| load_err(e.to_string()))?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer to the out-parameter.
        let rv = unsafe { lib.C_GetFunctionList(&mut list) };
        if rv != CKR_OK || list.is_null() {
            return Err(load_err(format!("C_GetFunctionList returned {rv:#x}")));
        }
        Ok(RawModule { _lib: lib, list })
    }

    fn functions(&self) -> &CK_FUNCTION_LIST {
        // SAFETY: `list` is non-null (checked in `load`) and lives as long as `_lib`.
        unsafe { &*self.list }
    }

    /// Mechanism numbers the slot offers, unfiltered.
    pub(crate) fn mechanism_list(
        &self,
        slot: CK_SLOT_ID,
    ) -> Result<Vec<CK_MECHANISM_TYPE>, HsmError> {
        let f = self
            .functions()
            .C_GetMechanismList
            .ok_or_else(|| HsmError::Unsupported {
                what: "C_GetMechanismList".into(),
            })?;
        let mut count: CK_ULONG = 0;
        // SAFETY: a null list pointer asks for the count only.
        let rv = unsafe { f(slot, std::ptr::null_mut(), &mut count) };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_GetMechanismList", rv));
        }
        let mut list: Vec<CK_MECHANISM_TYPE> = vec![0; count as usize];
        // SAFETY: `list` has room for `count` entries, as the token asked.
        let rv = unsafe { f(slot, list.as_mut_ptr(), &mut count) };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_GetMechanismList", rv));
        }
        list.truncate(count as usize);
        Ok(list)
    }

    /// `C_GetMechanismInfo`: the key sizes and flags the slot gives for a mechanism.
    pub(crate) fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mechanism: CK_MECHANISM_TYPE,
    ) -> Result<cryptoki_sys::CK_MECHANISM_INFO, HsmError> {
        let f = self
            .functions()
            .C_GetMechanismInfo
            .ok_or_else(|| HsmError::Unsupported {
                what: "C_GetMechanismInfo".into(),
            })?;
        let mut info = cryptoki_sys::CK_MECHANISM_INFO::default();
        // SAFETY: `info` receives one CK_MECHANISM_INFO and outlives the call.
        let rv = unsafe { f(slot, mechanism, &mut info) };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_GetMechanismInfo", rv));
        }
        Ok(info)
    }

    /// `C_SignInit` + `C_Sign` with a mechanism that takes no parameter (CMAC for KCVs;
    /// `cryptoki` has no name for `CKM_DES3_CMAC`).
    pub fn sign(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let _timer = CallTimer::with("C_Sign", mechanism);
        let f = self.functions();
        let (Some(init), Some(sign)) = (f.C_SignInit, f.C_Sign) else {
            return Err(HsmError::Unsupported {
                what: "C_Sign".into(),
            });
        };
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: the mechanism has no parameter and outlives the call.
        let rv = unsafe { init(session, &mut mech, key) };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_SignInit", rv));
        }
        let mut input = data.to_vec();
        let mut out = vec![0u8; 64];
        let mut len = out.len() as CK_ULONG;
        // SAFETY: `input` and `out` outlive the call; `len` says how much room `out` has. A MAC
        // of 64 bytes or less fits, so the one-call form ends the operation.
        let rv = unsafe {
            sign(
                session,
                input.as_mut_ptr(),
                input.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut len,
            )
        };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_Sign", rv));
        }
        out.truncate(len as usize);
        Ok(out)
    }

    /// One attribute's raw value (`None` when the object does not have it). `cryptoki` cannot
    /// read `CKA_ALLOWED_MECHANISMS` holding mechanisms it has no name for.
    pub(crate) fn attribute_bytes(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        attribute: cryptoki_sys::CK_ATTRIBUTE_TYPE,
    ) -> Result<Option<Vec<u8>>, HsmError> {
        let f = self
            .functions()
            .C_GetAttributeValue
            .ok_or_else(|| HsmError::Unsupported {
                what: "C_GetAttributeValue".into(),
            })?;
        let mut query = CK_ATTRIBUTE {
            type_: attribute,
            pValue: std::ptr::null_mut(),
            ulValueLen: 0,
        };
        // SAFETY: a null value pointer asks for the length only.
        let rv = unsafe { f(session, object, &mut query, 1) };
        if rv == cryptoki_sys::CKR_ATTRIBUTE_TYPE_INVALID
            || query.ulValueLen == cryptoki_sys::CK_UNAVAILABLE_INFORMATION
        {
            return Ok(None);
        }
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_GetAttributeValue", rv));
        }
        let mut value = vec![0u8; bounded_len("attribute length", query.ulValueLen)?];
        query.pValue = value.as_mut_ptr().cast();
        // SAFETY: `value` has the room the token asked for and outlives the call.
        let rv = unsafe { f(session, object, &mut query, 1) };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_GetAttributeValue", rv));
        }
        value.truncate(query.ulValueLen as usize);
        Ok(Some(value))
    }

    /// `C_EncryptInit` + `C_Encrypt` with AES-ECB (no IV) or AES-CBC (with `iv`), no padding:
    /// the caller pads. Used with transient card keys only.
    pub fn encrypt(
        &self,
        session: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        iv: Option<&[u8; 16]>,
        data: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let _timer = CallTimer::start(
            "C_Encrypt",
            if iv.is_some() {
                "CKM_AES_CBC"
            } else {
                "CKM_AES_ECB"
            },
        );
        let f = self.functions();
        let (Some(init), Some(encrypt)) = (f.C_EncryptInit, f.C_Encrypt) else {
            return Err(HsmError::Unsupported {
                what: "C_Encrypt".into(),
            });
        };
        let mut iv_copy = iv.copied();
        let mut mech = match iv_copy.as_mut() {
            Some(iv) => CK_MECHANISM {
                mechanism: cryptoki_sys::CKM_AES_CBC,
                pParameter: iv.as_mut_ptr().cast(),
                ulParameterLen: 16,
            },
            None => CK_MECHANISM {
                mechanism: cryptoki_sys::CKM_AES_ECB,
                pParameter: std::ptr::null_mut(),
                ulParameterLen: 0,
            },
        };
        // SAFETY: the mechanism and its IV outlive the call.
        let rv = unsafe { init(session, &mut mech, key) };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_EncryptInit", rv));
        }
        let mut input = data.to_vec();
        let mut out = vec![0u8; data.len() + 16];
        let mut len = out.len() as CK_ULONG;
        // SAFETY: `input` and `out` outlive the call; `len` is `out`'s room, enough for an
        // unpadded block cipher output.
        let rv = unsafe {
            encrypt(
                session,
                input.as_mut_ptr(),
                input.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut len,
            )
        };
        zeroize::Zeroize::zeroize(&mut input);
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_Encrypt", rv));
        }
        out.truncate(len as usize);
        Ok(out)
    }

    /// `C_WrapKey` with a parameterless mechanism (RFC 5649 key wrap, whichever number the
    /// token uses).
    pub fn wrap_key(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
    ) -> Result<Vec<u8>, HsmError> {
        let _timer = CallTimer::with("C_WrapKey", mechanism);
        let f = self
            .functions()
            .C_WrapKey
            .ok_or_else(|| HsmError::Unsupported {
                what: "C_WrapKey".into(),
            })?;
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut len: CK_ULONG = 0;
        // SAFETY: a null output asks for the length only.
        let rv = unsafe {
            f(
                session,
                &mut mech,
                wrapping,
                key,
                std::ptr::null_mut(),
                &mut len,
            )
        };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_WrapKey", rv));
        }
        let mut out = vec![0u8; bounded_len("wrapped key length", len)?];
        // SAFETY: `out` has the room the token asked for.
        let rv = unsafe {
            f(
                session,
                &mut mech,
                wrapping,
                key,
                out.as_mut_ptr(),
                &mut len,
            )
        };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_WrapKey", rv));
        }
        out.truncate(len as usize);
        Ok(out)
    }

    /// The boolean attributes of an attribute whose value is a template (`CKA_UNWRAP_TEMPLATE`,
    /// `CKA_DERIVE_TEMPLATE`) of `object`: `None` when it has none. Attributes of other sizes
    /// are left out: hkms's rules look only at the flags.
    pub(crate) fn template_flags(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        attribute: cryptoki_sys::CK_ATTRIBUTE_TYPE,
    ) -> Result<Option<Vec<(cryptoki_sys::CK_ATTRIBUTE_TYPE, bool)>>, HsmError> {
        let f = self
            .functions()
            .C_GetAttributeValue
            .ok_or_else(|| HsmError::Unsupported {
                what: "C_GetAttributeValue".into(),
            })?;
        let get = |query: &mut CK_ATTRIBUTE| {
            // SAFETY: `query` points to a buffer of `ulValueLen` bytes, or to none.
            let rv = unsafe { f(session, object, query, 1) };
            match rv {
                CKR_OK => Ok(true),
                cryptoki_sys::CKR_ATTRIBUTE_TYPE_INVALID => Ok(false),
                _ => Err(HsmError::from_rv("C_GetAttributeValue", rv)),
            }
        };
        // 1. The array's length.
        let mut query = CK_ATTRIBUTE {
            type_: attribute,
            pValue: std::ptr::null_mut(),
            ulValueLen: 0,
        };
        if !get(&mut query)? || query.ulValueLen == cryptoki_sys::CK_UNAVAILABLE_INFORMATION {
            return Ok(None);
        }
        let bytes = bounded_len("attribute template length", query.ulValueLen)?;
        let count = bytes / std::mem::size_of::<CK_ATTRIBUTE>();
        // 2. Each element's type and length, then 3. their values. Elements whose type is
        // CK_UNAVAILABLE_INFORMATION ask for the types (PKCS#11 3.2; Kryoptic reads any other
        // type as a request for that attribute, SoftHSM2 ignores the types given).
        let empty = CK_ATTRIBUTE {
            type_: cryptoki_sys::CK_UNAVAILABLE_INFORMATION,
            pValue: std::ptr::null_mut(),
            ulValueLen: 0,
        };
        let mut items = vec![empty; count];
        let mut query = CK_ATTRIBUTE {
            type_: attribute,
            pValue: items.as_mut_ptr().cast(),
            ulValueLen: (count * std::mem::size_of::<CK_ATTRIBUTE>()) as CK_ULONG,
        };
        get(&mut query)?;
        let mut values: Vec<Vec<u8>> = Vec::with_capacity(count);
        for item in items.iter_mut() {
            let len = bounded_len("attribute length", item.ulValueLen)?;
            let mut v = vec![0u8; len];
            item.pValue = v.as_mut_ptr().cast();
            values.push(v);
        }
        let mut query = CK_ATTRIBUTE {
            type_: attribute,
            pValue: items.as_mut_ptr().cast(),
            ulValueLen: (count * std::mem::size_of::<CK_ATTRIBUTE>()) as CK_ULONG,
        };
        get(&mut query)?;
        Ok(Some(
            items
                .iter()
                .zip(&values)
                .filter(|(item, v)| item.ulValueLen == 1 && v.len() == 1)
                .map(|(item, v)| (item.type_, v[0] != 0))
                .collect(),
        ))
    }

    /// `C_UnwrapKey` with `mechanism` into a key made from `template`, where `nested` adds the
    /// attributes whose value is a template (see [`CTemplate`]).
    pub(crate) fn unwrap_key(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &CK_MECHANISM,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: &[Attribute],
        nested: &[NestedTemplate],
    ) -> Result<CK_OBJECT_HANDLE, HsmError> {
        let _timer = CallTimer::with("C_UnwrapKey", mechanism.mechanism);
        let f = self
            .functions()
            .C_UnwrapKey
            .ok_or_else(|| HsmError::Unsupported {
                what: "C_UnwrapKey".into(),
            })?;
        let mut mech = *mechanism;
        let mut input = wrapped.to_vec();
        let mut attrs = CTemplate::new(template, nested);
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: the mechanism (and the parameter it points to, which the caller keeps), the
        // wrapped bytes and the template with its nested arrays outlive the call.
        let rv = unsafe {
            f(
                session,
                &mut mech,
                unwrapping,
                input.as_mut_ptr(),
                input.len() as CK_ULONG,
                attrs.as_mut_ptr(),
                attrs.len(),
                &mut handle,
            )
        };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_UnwrapKey", rv));
        }
        Ok(handle)
    }

    /// `C_GenerateKey` with a parameterless `mechanism` into a key made from `template`, where
    /// `nested` adds the attributes whose value is a template (see [`CTemplate`]).
    pub(crate) fn generate_key(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        template: &[Attribute],
        nested: &[NestedTemplate],
    ) -> Result<CK_OBJECT_HANDLE, HsmError> {
        let _timer = CallTimer::with("C_GenerateKey", mechanism);
        let f = self
            .functions()
            .C_GenerateKey
            .ok_or_else(|| HsmError::Unsupported {
                what: "C_GenerateKey".into(),
            })?;
        let mut mech = plain_mechanism(mechanism);
        let mut attrs = CTemplate::new(template, nested);
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: the mechanism and the template with its nested arrays outlive the call.
        let rv = unsafe {
            f(
                session,
                &mut mech,
                attrs.as_mut_ptr(),
                attrs.len(),
                &mut handle,
            )
        };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_GenerateKey", rv));
        }
        Ok(handle)
    }

    /// `C_CreateObject` from `template` (and `nested`, see [`CTemplate`]).
    pub(crate) fn create_object(
        &self,
        session: CK_SESSION_HANDLE,
        template: &[Attribute],
        nested: &[NestedTemplate],
    ) -> Result<CK_OBJECT_HANDLE, HsmError> {
        let _timer = CallTimer::start("C_CreateObject", "none");
        let f = self
            .functions()
            .C_CreateObject
            .ok_or_else(|| HsmError::Unsupported {
                what: "C_CreateObject".into(),
            })?;
        let mut attrs = CTemplate::new(template, nested);
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: the template with its nested arrays outlives the call.
        let rv = unsafe { f(session, attrs.as_mut_ptr(), attrs.len(), &mut handle) };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_CreateObject", rv));
        }
        Ok(handle)
    }

    /// `C_DestroyObject`.
    pub fn destroy_object(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<(), HsmError> {
        let _timer = CallTimer::start("C_DestroyObject", "none");
        let f = self
            .functions()
            .C_DestroyObject
            .ok_or_else(|| HsmError::Unsupported {
                what: "C_DestroyObject".into(),
            })?;
        // SAFETY: plain handles, no pointers.
        let rv = unsafe { f(session, object) };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_DestroyObject", rv));
        }
        Ok(())
    }

    /// `C_DeriveKey` with a `*_ECB_ENCRYPT_DATA` mechanism over `data`.
    pub fn derive_encrypt_data(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        base: CK_OBJECT_HANDLE,
        data: &[u8],
        template: &[Attribute],
        nested: &[NestedTemplate],
    ) -> Result<CK_OBJECT_HANDLE, HsmError> {
        let _timer = CallTimer::with("C_DeriveKey", mechanism);
        let f = self
            .functions()
            .C_DeriveKey
            .ok_or_else(|| HsmError::Unsupported {
                what: "C_DeriveKey".into(),
            })?;
        // The token only reads the data; the copy keeps the FFI call free of casts away from const.
        let mut data = zeroize::Zeroizing::new(data.to_vec());
        let mut params = CK_KEY_DERIVATION_STRING_DATA {
            pData: data.as_mut_ptr(),
            ulLen: data.len() as CK_ULONG,
        };
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: (&mut params as *mut CK_KEY_DERIVATION_STRING_DATA).cast(),
            ulParameterLen: std::mem::size_of::<CK_KEY_DERIVATION_STRING_DATA>() as CK_ULONG,
        };
        let mut attrs = CTemplate::new(template, nested);
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: every pointer passed (mechanism, its parameter, the data, the template whose
        // values borrow from `template` and `nested`) outlives the call; `handle` receives one
        // value.
        let rv = unsafe {
            f(
                session,
                &mut mech,
                base,
                attrs.as_mut_ptr(),
                attrs.len(),
                &mut handle,
            )
        };
        if rv != CKR_OK {
            return Err(HsmError::from_rv("C_DeriveKey", rv));
        }
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reported_length_is_bounded_before_anything_is_allocated() {
        assert_eq!(bounded_len("attribute length", 40).unwrap(), 40);
        assert_eq!(
            bounded_len("attribute length", MAX_TOKEN_OUTPUT as _).unwrap(),
            MAX_TOKEN_OUTPUT
        );
        for huge in [MAX_TOKEN_OUTPUT as u64 + 1, u64::MAX - 1] {
            let err = bounded_len("wrapped key length", huge as _).unwrap_err();
            assert!(err.to_string().contains("at most 65536"), "{err}");
        }
    }
}
