//! Identifier normalisation and hashing, as the ad platforms publish it.
//!
//! A customer list matches only when the uploader and the platform hash the same bytes, so each
//! identifier is first brought to the platform's canonical text, then hashed with SHA-256 and
//! written as lowercase hex. The rules, with their sources, are in docs/campaigns.md:
//!
//! | kind | google | meta | linkedin | generic |
//! |---|---|---|---|---|
//! | email | trim, lowercase | trim, lowercase | trim, lowercase | trim, lowercase |
//! | phone | E.164 with `+` | E.164 digits, no `+` | not accepted | E.164 with `+` |
//! | raw | trimmed | trimmed | trimmed, lowercase | trimmed |
//!
//! A value that is empty after normalisation (or a phone number that is not a valid number)
//! yields `None`: it is never exported as the hash of an empty string.

use std::fmt::Write;
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Where the audience files go; decides column names and the rules that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Google Ads Customer Match.
    Google,
    /// Meta (Facebook, Instagram) custom audiences from a customer list.
    Meta,
    /// LinkedIn matched audiences (contact lists).
    Linkedin,
    /// A plain file for a DMP or any other tool.
    Generic,
}

impl Platform {
    /// The documented smallest list the platform accepts or serves (see docs/campaigns.md).
    pub fn min_size(self) -> usize {
        match self {
            Platform::Google | Platform::Meta => 100,
            Platform::Linkedin => 300,
            Platform::Generic => 0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Platform::Google => "google",
            Platform::Meta => "meta",
            Platform::Linkedin => "linkedin",
            Platform::Generic => "generic",
        }
    }

    /// The column header the platform's upload template uses for `kind`; `None` for generic,
    /// which names each column after its source column.
    pub fn header(self, kind: Kind) -> Result<Option<&'static str>> {
        let h = match (self, kind) {
            (Platform::Generic, _) => return Ok(None),
            (Platform::Google, Kind::Email) => "Email",
            (Platform::Google, Kind::Phone) => "Phone",
            (Platform::Google, Kind::Raw) => "Mobile Device ID",
            (Platform::Meta, Kind::Email) => "email",
            (Platform::Meta, Kind::Phone) => "phone",
            (Platform::Meta, Kind::Raw) => "madid",
            (Platform::Linkedin, Kind::Email) => "email",
            (Platform::Linkedin, Kind::Raw) => "googleaid",
            (Platform::Linkedin, Kind::Phone) => {
                return Err(Error::Usage(
                    "--platform linkedin does not match on phone numbers; its contact lists \
                     take email and raw (Google advertising id) identifiers"
                        .into(),
                ));
            }
        };
        Ok(Some(h))
    }
}

/// What an identifier column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An email address, hashed.
    Email,
    /// A phone number, brought to E.164 and hashed.
    Phone,
    /// Passed through unhashed: first-party ids, mobile advertising ids.
    Raw,
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Kind> {
        match s {
            "email" => Ok(Kind::Email),
            "phone" => Ok(Kind::Phone),
            "raw" => Ok(Kind::Raw),
            other => Err(Error::Usage(format!(
                "unknown identifier kind '{other}' (valid: email, phone, raw)"
            ))),
        }
    }
}

/// SHA-256 of `text`'s UTF-8 bytes, as 64 lowercase hex digits.
pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Email as every platform asks for it before hashing: surrounding whitespace removed,
/// lowercased.
pub fn normalize_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    (!e.is_empty()).then_some(e)
}

/// A parsed country for national phone numbers, from an ISO 3166 alpha-2 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Country(phonenumber::country::Id);

impl FromStr for Country {
    type Err = Error;
    fn from_str(s: &str) -> Result<Country> {
        s.trim()
            .to_ascii_uppercase()
            .parse::<phonenumber::country::Id>()
            .map(Country)
            .map_err(|_| {
                Error::Usage(format!(
                    "--default-country '{s}' is not an ISO 3166 alpha-2 region code \
                     (such as US, GB, DE, FR, IN)"
                ))
            })
    }
}

/// A phone number in E.164 (`+` and up to 15 digits), or `None` when it is not a valid number.
///
/// Numbers written internationally (`+44 20 7946 0018`) need no country; national ones
/// (`020 7946 0018`) are read as numbers of `default` and lose their trunk prefix on the way.
/// Parsing and validation use the libphonenumber metadata (all regions) carried by the
/// `phonenumber` crate.
pub fn normalize_phone(raw: &str, default: Option<Country>) -> Option<String> {
    let text = raw.trim();
    if text.is_empty() {
        return None;
    }
    // Without a region only the international form can be read unambiguously.
    if default.is_none() && !text.starts_with('+') {
        return None;
    }
    let parsed = std::panic::catch_unwind(|| {
        phonenumber::parse(default.map(|c| c.0), text)
            .ok()
            .filter(phonenumber::is_valid)
            .map(|n| n.format().mode(phonenumber::Mode::E164).to_string())
    });
    parsed.ok().flatten()
}

/// How one identifier column is turned into the text written to the audience file.
#[derive(Debug, Clone, Copy)]
pub struct Normalizer {
    pub kind: Kind,
    pub platform: Platform,
    pub default_country: Option<Country>,
}

impl Normalizer {
    /// The exported cell for `raw`, or `None` when nothing usable is left.
    pub fn apply(&self, raw: &str) -> Option<String> {
        match self.kind {
            Kind::Email => normalize_email(raw).map(|e| sha256_hex(&e)),
            Kind::Phone => normalize_phone(raw, self.default_country).map(|p| {
                let text = match self.platform {
                    // Meta hashes the digits alone: country code and number, no '+'.
                    Platform::Meta => p.trim_start_matches('+').to_string(),
                    _ => p,
                };
                sha256_hex(&text)
            }),
            Kind::Raw => {
                let t = raw.trim();
                if t.is_empty() {
                    None
                } else if self.platform == Platform::Linkedin {
                    // LinkedIn takes Google advertising ids in lower case.
                    Some(t.to_lowercase())
                } else {
                    Some(t.to_string())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answers() {
        // FIPS 180-2 test vectors.
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn email_matches_meta_published_example() {
        // Meta's customer information parameters page: input, normalised form, expected hash.
        let n = Normalizer {
            kind: Kind::Email,
            platform: Platform::Meta,
            default_country: None,
        };
        assert_eq!(
            normalize_email("  John_Smith@gmail.com ").as_deref(),
            Some("john_smith@gmail.com")
        );
        assert_eq!(
            n.apply("John_Smith@gmail.com").as_deref(),
            Some("62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f")
        );
        assert_eq!(n.apply("   "), None);
    }

    #[test]
    fn phone_matches_meta_published_example() {
        // Meta: US number (650)555-1212 normalises to 16505551212.
        let us: Country = "us".parse().unwrap();
        let meta = Normalizer {
            kind: Kind::Phone,
            platform: Platform::Meta,
            default_country: Some(us),
        };
        assert_eq!(
            meta.apply("(650)555-1212").as_deref(),
            Some("e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176")
        );
        let google = Normalizer {
            platform: Platform::Google,
            ..meta
        };
        assert_eq!(
            google.apply("(650)555-1212"),
            Some(sha256_hex("+16505551212"))
        );
    }

    #[test]
    fn phones_to_e164() {
        let gb: Country = "GB".parse().unwrap();
        let de: Country = "DE".parse().unwrap();
        let fr: Country = "FR".parse().unwrap();
        // National numbers lose the trunk prefix 0 and gain the country code.
        assert_eq!(
            normalize_phone("020 7946 0018", Some(gb)).as_deref(),
            Some("+442079460018")
        );
        assert_eq!(
            normalize_phone("030 901820", Some(de)).as_deref(),
            Some("+4930901820")
        );
        assert_eq!(
            normalize_phone("01 42 68 53 00", Some(fr)).as_deref(),
            Some("+33142685300")
        );
        // International numbers keep their own country whatever the default.
        assert_eq!(
            normalize_phone("+1 (212) 565-0000", Some(gb)).as_deref(),
            Some("+12125650000")
        );
        assert_eq!(
            normalize_phone("+44 20 7031 3000", None).as_deref(),
            Some("+442070313000")
        );
        // A national number without a default country, too short, or not a number at all.
        assert_eq!(normalize_phone("020 7946 0018", None), None);
        assert_eq!(normalize_phone("12", Some(gb)), None);
        assert_eq!(normalize_phone("n/a", Some(gb)), None);
        assert_eq!(normalize_phone("  ", Some(gb)), None);
        assert!("XX".parse::<Country>().is_err());
    }

    #[test]
    fn raw_is_trimmed_and_lowercased_where_platforms_ask() {
        let id = " AECE52E7-03EE-455A-B3C4-E57283966239 ";
        let mk = |platform| Normalizer {
            kind: Kind::Raw,
            platform,
            default_country: None,
        };
        assert_eq!(
            mk(Platform::Generic).apply(id).as_deref(),
            Some("AECE52E7-03EE-455A-B3C4-E57283966239")
        );
        assert_eq!(
            mk(Platform::Linkedin).apply(id).as_deref(),
            Some("aece52e7-03ee-455a-b3c4-e57283966239")
        );
        assert_eq!(
            mk(Platform::Meta).apply(id).as_deref(),
            Some("AECE52E7-03EE-455A-B3C4-E57283966239")
        );
        assert_eq!(mk(Platform::Google).apply(""), None);
    }

    #[test]
    fn linkedin_refuses_phones() {
        assert!(Platform::Linkedin.header(Kind::Phone).is_err());
        assert_eq!(Platform::Google.header(Kind::Email).unwrap(), Some("Email"));
        assert_eq!(Platform::Generic.header(Kind::Email).unwrap(), None);
    }
}
