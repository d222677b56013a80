//! What a username, a password and a display name may be, how display names
//! are compared, and the stable colour of a user (PROTOCOL.md §8, §11).
//!
//! These rules are shared by `POST /register`, `POST /login`, `POST /auth`
//! (guest names) and the `rookery user` commands, so that every way in refuses
//! the same things with the same texts.

/// Shortest and longest username, in characters of `[a-z0-9_]`.
const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;
/// Shortest and longest password, in bytes of UTF-8.
const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=1024;
/// Longest display name, in characters (§8).
const MAX_NAME_CHARS: usize = 32;

/// A refused field; the text names it, and is what the client sees (422).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidField {
    #[error("Missing username")]
    MissingUsername,
    #[error("Invalid username: use 3 to 32 characters of a-z, 0-9 and _")]
    Username,
    #[error("Missing password")]
    MissingPassword,
    #[error("Invalid password: use 8 to 1024 bytes")]
    Password,
    #[error("Invalid name: use 1 to 32 characters, no control or invisible characters")]
    Name,
}

/// Lowers `input` and checks it is a valid username.
///
/// Input in any case is accepted and lowered (§11), so `Alice` and `alice` are
/// one account. Only ASCII letters are lowered: anything else is refused anyway.
pub fn normalize_username(input: &str) -> Result<String, InvalidField> {
    if input.is_empty() {
        return Err(InvalidField::MissingUsername);
    }
    let username = input.to_ascii_lowercase();
    let valid = USERNAME_CHARS.contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(username)
    } else {
        Err(InvalidField::Username)
    }
}

/// Checks a new password's length. Passwords are never trimmed or normalized:
/// what the user typed is what is hashed.
pub fn check_password(password: &str) -> Result<(), InvalidField> {
    match password.len() {
        0 => Err(InvalidField::MissingPassword),
        n if PASSWORD_BYTES.contains(&n) => Ok(()),
        _ => Err(InvalidField::Password),
    }
}

/// Whether `password` could be a valid password; a longer one is refused at
/// login without hashing it, so a huge body cannot buy a long hash.
pub(crate) fn plausible_password(password: &str) -> bool {
    PASSWORD_BYTES.contains(&password.len())
}

/// Trims and validates a display name: 1–32 characters, no control characters
/// (§8) and nothing invisible that could make two names look alike or reorder
/// the text around them (see [`is_invisible`]).
pub fn validate_display_name(name: &str) -> Result<String, InvalidField> {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(InvalidField::Name);
    }
    Ok(name.to_owned())
}

/// Characters refused in display names although they are not control
/// characters: every format character (Unicode category Cf: bidi embeddings,
/// overrides and isolates U+202A–U+202E and U+2066–U+2069, zero-width spaces
/// and joiners U+200B–U+200F, word joiner and invisible operators
/// U+2060–U+2064, the BOM U+FEFF, soft hyphen, tag characters…), the line and
/// paragraph separators, and letters that render as blanks (Hangul fillers,
/// the combining grapheme joiner). A name made of or containing these could
/// impersonate another one or flip the direction of the text after it.
///
/// The consequence: emoji sequences joined with U+200D (ZWJ) are refused; single
/// emoji and variation selectors are fine.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c,
        // Format characters (Cf), Unicode 15.1.
        '\u{00AD}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}'
        // Line and paragraph separators (Zl, Zp).
        | '\u{2028}'..='\u{2029}'
        // Blank-looking letters and the combining grapheme joiner.
        | '\u{034F}'
        | '\u{115F}'..='\u{1160}'
        | '\u{3164}'
        | '\u{FFA0}'
    )
}

/// The key under which display names are compared: Unicode-aware lower case
/// (`str::to_lowercase`) of the trimmed name, so `Bob`, `BOB` and `bob` are
/// one name, and `ÉMILE` equals `émile`.
///
/// This is lower-casing, not full case folding or compatibility normalization:
/// `Straße` and `STRASSE` stay different, and so do look-alikes from other
/// scripts (Cyrillic `а` vs Latin `a`). Messages are attributed by `user` and
/// `client_id`, never by name, so a look-alike can confuse a reader but cannot
/// take over anyone's conversations.
pub fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Colours for names, chosen for the chat page: each has a contrast of at least
/// 4.5:1 (WCAG AA for text) against white and at least 3:1 (AA for large text
/// and UI parts) against the dark background `#1e1e1e`. No colour reaches 4.5:1
/// against both (that would need a relative luminance both ≤ 0.183 and ≥
/// 0.233), so white, the light theme, gets the full text contrast.
pub const PALETTE: [&str; 12] = [
    "#db3333", "#a9631e", "#797915", "#4f821c", "#228722", "#18864f", "#1c8282", "#1d75cd", "#6363e9", "#994ce6",
    "#c62ac6", "#d92680",
];

/// The stable colour of a user: FNV-1a of the username picks a palette entry.
/// FNV is used (not `std`'s hasher) because its output is fixed forever, so a
/// user keeps their colour across versions, restarts and nodes.
pub fn user_color(username: &str) -> &'static str {
    let hash = username.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    PALETTE[(hash % PALETTE.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowered_and_checked() {
        assert_eq!(normalize_username("Alice_99"), Ok("alice_99".into()));
        assert_eq!(normalize_username("abc"), Ok("abc".into()));
        assert_eq!(normalize_username(&"a".repeat(32)), Ok("a".repeat(32)));
        assert_eq!(normalize_username(""), Err(InvalidField::MissingUsername));
        for bad in ["ab", &"a".repeat(33), "al ice", "alice!", "ålice", "al-ice", "İbc"] {
            assert_eq!(normalize_username(bad), Err(InvalidField::Username), "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_8_to_1024_bytes() {
        assert_eq!(check_password(""), Err(InvalidField::MissingPassword));
        assert_eq!(check_password("1234567"), Err(InvalidField::Password));
        assert_eq!(check_password("12345678"), Ok(()));
        assert_eq!(check_password(&"é".repeat(512)), Ok(()));
        assert_eq!(check_password(&"x".repeat(1025)), Err(InvalidField::Password));
        assert!(!plausible_password(&"x".repeat(1025)));
    }

    #[test]
    fn display_names_refuse_control_and_invisible_characters() {
        assert_eq!(validate_display_name(" Ann "), Ok("Ann".into()));
        assert_eq!(validate_display_name(&"名".repeat(32)), Ok("名".repeat(32)));
        assert_eq!(validate_display_name("Zoë 🐦\u{FE0F}"), Ok("Zoë 🐦\u{FE0F}".into()));
        let bad = [
            String::new(),
            "   ".into(),
            "x".repeat(33),
            "a\u{7}b".into(),
            "a\nb".into(),
            "admin\u{202E}nimda".into(),
            "\u{2066}bob\u{2069}".into(),
            "bo\u{200B}b".into(),
            "bob\u{200D}".into(),
            "\u{FEFF}bob".into(),
            "bob\u{2060}".into(),
            "bo\u{00AD}b".into(),
            "bob\u{E0041}".into(),
            "a\u{2028}b".into(),
            "\u{3164}".into(),
        ];
        for name in bad {
            assert_eq!(validate_display_name(&name), Err(InvalidField::Name), "{name:?}");
        }
    }

    #[test]
    fn name_keys_ignore_case_in_any_script() {
        assert_eq!(name_key("Bob"), name_key("BOB"));
        assert_eq!(name_key("ÉMILE"), name_key("émile"));
        assert_eq!(name_key("ΣΟΦΙΑ"), "σοφια");
        assert_ne!(name_key("bob"), name_key("bób"));
    }

    /// WCAG 2 relative luminance of `#rrggbb`.
    fn luminance(hex: &str) -> f64 {
        let channel = |i: usize| {
            let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
    }

    fn contrast(a: &str, b: &str) -> f64 {
        let (la, lb) = (luminance(a), luminance(b));
        (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
    }

    #[test]
    fn palette_colours_are_readable_on_white_and_on_dark() {
        assert!((contrast("#ffffff", "#000000") - 21.0).abs() < 1e-9);
        for color in PALETTE {
            assert!(contrast(color, "#ffffff") >= 4.5, "{color} on white");
            assert!(contrast(color, "#1e1e1e") >= 3.0, "{color} on #1e1e1e");
        }
    }

    #[test]
    fn user_colours_are_stable_and_spread() {
        assert_eq!(user_color("alice"), user_color("alice"));
        // Fixed values: a change here would recolour every existing user.
        assert_eq!((user_color("alice"), user_color("bob")), ("#d92680", "#db3333"));
        let distinct: std::collections::HashSet<_> = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
            .iter()
            .map(|u| user_color(u))
            .collect();
        assert!(distinct.len() >= 4, "{distinct:?}");
    }
}
