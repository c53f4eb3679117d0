//! A lint of the public API (`proto/`), in the spirit of buf's default rules, over the
//! descriptors the server publishes by reflection: what Go, Java and Python teams rely on when
//! they generate code from our files. Each rule names what breaks and where.

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};

fn files() -> Vec<FileDescriptorProto> {
    FileDescriptorSet::decode(hkms::proto::FILE_DESCRIPTOR_SET)
        .expect("the published descriptor set decodes")
        .file
        .into_iter()
        .filter(|f| f.package() == "hkms.v1")
        .collect()
}

fn is_pascal(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn is_lower_snake(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.contains("__")
}

fn upper_snake(pascal: &str) -> String {
    let mut out = String::new();
    for (i, c) in pascal.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Every message with its nested messages, named `Outer.Inner`.
fn messages<'a>(
    prefix: &str,
    list: &'a [DescriptorProto],
    out: &mut Vec<(String, &'a DescriptorProto)>,
) {
    for m in list {
        let name = format!("{prefix}{}", m.name());
        messages(&format!("{name}."), &m.nested_type, out);
        out.push((name, m));
    }
}

#[test]
fn files_sit_in_their_versioned_package_with_go_and_java_options() {
    let files = files();
    assert!(files.len() >= 7, "the hkms.v1 files are published");
    for f in &files {
        let name = f.name();
        assert!(
            name.starts_with("hkms/v1/")
                && is_lower_snake(
                    name.trim_start_matches("hkms/v1/")
                        .trim_end_matches(".proto")
                ),
            "{name}: a file of package hkms.v1 lives in hkms/v1/ with a lower_snake_case name"
        );
        let o = f
            .options
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no file options"));
        assert!(
            o.go_package().ends_with("/hkms/v1;hkmsv1"),
            "{name}: go_package must be set (…/hkms/v1;hkmsv1)"
        );
        assert_eq!(o.java_package(), "cn.gov.hkms.v1", "{name}: java_package");
        assert!(
            o.java_multiple_files(),
            "{name}: java_multiple_files = true"
        );
        assert!(
            !o.java_outer_classname().is_empty(),
            "{name}: java_outer_classname"
        );
    }
}

#[test]
fn names_follow_the_style_every_generator_expects() {
    for f in files() {
        let file = f.name();
        let mut all = Vec::new();
        messages("", &f.message_type, &mut all);
        for (name, m) in all {
            assert!(
                is_pascal(m.name()),
                "{file}: message {name} is not PascalCase"
            );
            for field in &m.field {
                assert!(
                    is_lower_snake(field.name()),
                    "{file}: field {name}.{} is not lower_snake_case",
                    field.name()
                );
            }
        }
        for s in &f.service {
            assert!(
                is_pascal(s.name()) && s.name().ends_with("Service"),
                "{file}: service {} must be PascalCase and end in Service",
                s.name()
            );
            for m in &s.method {
                assert!(
                    is_pascal(m.name()),
                    "{file}: rpc {} is not PascalCase",
                    m.name()
                );
            }
        }
    }
}

#[test]
fn enums_start_with_unspecified_and_prefix_their_values() {
    for f in files() {
        let mut enums: Vec<_> = f.enum_type.iter().collect();
        let mut all = Vec::new();
        messages("", &f.message_type, &mut all);
        for (_, m) in &all {
            enums.extend(m.enum_type.iter());
        }
        for e in enums {
            let prefix = upper_snake(e.name());
            let zero = e.value.iter().find(|v| v.number() == 0);
            assert_eq!(
                zero.map(|v| v.name().to_string()),
                Some(format!("{prefix}_UNSPECIFIED")),
                "{}: enum {} must have {prefix}_UNSPECIFIED = 0",
                f.name(),
                e.name()
            );
            for v in &e.value {
                assert!(
                    v.name().starts_with(&format!("{prefix}_")),
                    "{}: value {} of enum {} must start with {prefix}_",
                    f.name(),
                    v.name(),
                    e.name()
                );
            }
        }
    }
}
