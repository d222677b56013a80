//! Go `regexp` syntax (RE2, `syntax.Perl` flags) for permission keys.
//!
//! PROTOCOL.md §6 defines a key's syntax as Go's `regexp` **plus look-around
//! and backreferences**. The `regex` and `fancy-regex` crates accept a
//! different language: they are more lenient in places (`a{,2}`, `a{01}`,
//! `(?x)`, `\u0041`, `\Z`, `\p{greek}`, `(?ii)` …) and read some shared
//! spellings differently (`\d`, `\s`, `\w` and `\b` are ASCII in Go, Unicode
//! in the crates; `\12` is an octal escape in Go, a backreference in
//! fancy-regex; `\<` is a literal in Go, a word boundary in the crates; `[a&&b]`
//! is a plain set in Go, an intersection in the crates; `\Q…\E` exists only in
//! Go). Feeding keys to the crates directly would give answers Scaledrone never
//! gives.
//!
//! So this module parses a key with Go's rules — a transcription of
//! `regexp/syntax/parse.go` (Go 1.19), checked by the differential test in
//! `tests/regexp_diff.rs` against the real Go — and re-emits it in a
//! canonical spelling both crates read exactly as Go reads the original: every
//! ASCII literal becomes `\x{..}`, Perl and POSIX classes become explicit
//! ASCII ranges, flags become one explicit `(?i-ms)` state, group names are
//! dropped (they never affect matching), laziness is dropped (it never affects
//! *whether* a key matches), and every repetition gets its own `(?:…)`.
//!
//! Decisions where Go's behaviour is not simply copied:
//! - Look-around (`(?=`, `(?!`, `(?<=`, `(?<!`) and numeric backreferences
//!   (`\1`–`\9` where Go would not read an octal escape) are accepted and
//!   mark the key for the backtracking fallback. Named backreferences
//!   (`\k<n>`, `(?P=n)`) are not: they match nothing, like any key Go rejects.
//! - `(?<name>re)` is accepted as a named group, as Go accepts it since 1.22.
//! - Go accepts a repeated empty-width assertion (`^*`, `\b+`, `$?`), so
//!   Rookery does too. (PROTOCOL.md §6 cites `^*.$` as a key Go rejects; Go
//!   1.19 compiles it, and Go's answer is what this module follows.)
//! - In the fallback engine `\b`/`\B` are spelled as ASCII look-arounds, so
//!   they keep Go's ASCII meaning there too.
//! - Go's size limits are mirrored where they are cheap to mirror: nesting
//!   depth (1000, checked without recursion), repeat counts (≤ 1000, nested
//!   product ≤ 1000). Go's "expression too large" estimate is not; such keys
//!   hit the `regex` crate's size limit instead and match nothing. The crate
//!   also refuses nesting deeper than 250 (it compiles recursively, and Go's
//!   1000 would overflow a worker's stack), so keys nested 251–1000 deep
//!   match nothing although Go accepts them.
//! - Unicode tables are Go 1.19's names (Unicode 13); the crates' data is
//!   newer, so characters assigned after Unicode 13 may classify differently.

use std::fmt::Write as _;

/// Go's `maxHeight`: deeper nesting is "expression nests too deeply".
const MAX_DEPTH: usize = 1000;
/// Go's bound on a repeat count and on the product of nested counts.
const MAX_REPEAT: u32 = 1000;

/// A key Go's parser (extended with look-around and backreferences) rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: `{near}`")]
pub(crate) struct SyntaxError {
    kind: &'static str,
    near: String,
}

fn error<T>(kind: &'static str, near: &str) -> Result<T, SyntaxError> {
    Err(SyntaxError {
        kind,
        near: near.to_owned(),
    })
}

/// A key in the canonical spelling, and which engine must run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Translation {
    /// Plain RE2: the linear-time `regex` crate.
    Linear(String),
    /// Uses look-around or backreferences: `fancy-regex` with a step limit.
    Fallback(String),
}

/// Parses `pattern` with Go's rules and returns its canonical spelling.
pub(crate) fn translate(pattern: &str) -> Result<Translation, SyntaxError> {
    let linear = Translator::new(false).run(pattern)?;
    if !linear.needs_fallback {
        return Ok(Translation::Linear(linear.out));
    }
    // Word boundaries are spelled differently for fancy-regex; parse again.
    Ok(Translation::Fallback(Translator::new(true).run(pattern)?.out))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flags {
    fold: bool,
    multi_line: bool,
    dot_nl: bool,
}

impl Flags {
    fn emit(self, out: &mut String, terminator: char) {
        let mut on = String::new();
        let mut off = String::new();
        for (set, name) in [(self.fold, 'i'), (self.multi_line, 'm'), (self.dot_nl, 's')] {
            if set { on.push(name) } else { off.push(name) }
        }
        out.push_str("(?");
        out.push_str(&on);
        if !off.is_empty() {
            out.push('-');
            out.push_str(&off);
        }
        out.push(terminator);
    }
}

/// Something a repetition operator can apply to.
struct Atom {
    text: String,
    /// Largest product of nested counted repeats inside (Go's `repeatIsValid`).
    chain: u32,
}

struct Frame {
    /// What closes this group: `)` for groups, nothing for the top level.
    opening: String,
    done: String,
    /// The last atom (a repetition applies to it) and flag changes that came
    /// after it (Go applies `a(?i)*` to `a`).
    last: Option<(Atom, String)>,
    chain: u32,
    flags_at_open: Flags,
}

impl Frame {
    fn new(opening: String, flags_at_open: Flags) -> Self {
        Frame {
            opening,
            done: String::new(),
            last: None,
            chain: 1,
            flags_at_open,
        }
    }

    fn flush(&mut self) {
        if let Some((atom, trailing)) = self.last.take() {
            self.done.push_str(&atom.text);
            self.done.push_str(&trailing);
            self.chain = self.chain.max(atom.chain);
        }
    }

    fn push_atom(&mut self, text: String, chain: u32) {
        self.flush();
        self.last = Some((Atom { text, chain }, String::new()));
    }

    /// Text that is not an atom (flag changes): after the last atom if any.
    fn push_other(&mut self, text: &str) {
        match &mut self.last {
            Some((_, trailing)) => trailing.push_str(text),
            None => self.done.push_str(text),
        }
    }
}

struct Output {
    out: String,
    needs_fallback: bool,
}

struct Translator {
    fallback: bool,
    needs_fallback: bool,
    flags: Flags,
    frames: Vec<Frame>,
}

/// Go's `perlGroup` and `posixGroup`: ASCII ranges.
const DIGIT: &[(u32, u32)] = &[(0x30, 0x39)];
const SPACE_PERL: &[(u32, u32)] = &[(0x9, 0xa), (0xc, 0xd), (0x20, 0x20)];
const WORD: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)];

fn perl_group(c: char) -> Option<(bool, &'static [(u32, u32)])> {
    Some(match c {
        'd' => (true, DIGIT),
        'D' => (false, DIGIT),
        's' => (true, SPACE_PERL),
        'S' => (false, SPACE_PERL),
        'w' => (true, WORD),
        'W' => (false, WORD),
        _ => return None,
    })
}

fn posix_group(name: &str) -> Option<&'static [(u32, u32)]> {
    Some(match name {
        "alnum" => &[(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a)],
        "alpha" => &[(0x41, 0x5a), (0x61, 0x7a)],
        "ascii" => &[(0x0, 0x7f)],
        "blank" => &[(0x9, 0x9), (0x20, 0x20)],
        "cntrl" => &[(0x0, 0x1f), (0x7f, 0x7f)],
        "digit" => DIGIT,
        "graph" => &[(0x21, 0x7e)],
        "lower" => &[(0x61, 0x7a)],
        "print" => &[(0x20, 0x7e)],
        "punct" => &[(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],
        "space" => &[(0x9, 0xd), (0x20, 0x20)],
        "upper" => &[(0x41, 0x5a)],
        "word" => WORD,
        "xdigit" => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
        _ => return None,
    })
}

/// Go 1.19's `unicode.Categories` keys, space-separated.
const CATEGORIES: &str =
    "C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs";

/// Go 1.19's `unicode.Scripts` keys (Unicode 13), space-separated.
const SCRIPTS: &str = "Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum Bassa_Vah Batak Bengali \
    Bhaiksuki Bopomofo Brahmi Braille Buginese Buhid Canadian_Aboriginal Carian Caucasian_Albanian \
    Chakma Cham Cherokee Chorasmian Common Coptic Cuneiform Cypriot Cyrillic Deseret Devanagari \
    Dives_Akuru Dogra Duployan Egyptian_Hieroglyphs Elbasan Elymaic Ethiopic Georgian Glagolitic Gothic \
    Grantha Greek Gujarati Gunjala_Gondi Gurmukhi Han Hangul Hanifi_Rohingya Hanunoo Hatran Hebrew \
    Hiragana Imperial_Aramaic Inherited Inscriptional_Pahlavi Inscriptional_Parthian Javanese Kaithi \
    Kannada Katakana Kayah_Li Kharoshthi Khitan_Small_Script Khmer Khojki Khudawadi Lao Latin Lepcha \
    Limbu Linear_A Linear_B Lisu Lycian Lydian Mahajani Makasar Malayalam Mandaic Manichaean Marchen \
    Masaram_Gondi Medefaidrin Meetei_Mayek Mende_Kikakui Meroitic_Cursive Meroitic_Hieroglyphs Miao Modi \
    Mongolian Mro Multani Myanmar Nabataean Nandinagari New_Tai_Lue Newa Nko Nushu \
    Nyiakeng_Puachue_Hmong Ogham Ol_Chiki Old_Hungarian Old_Italic Old_North_Arabian Old_Permic \
    Old_Persian Old_Sogdian Old_South_Arabian Old_Turkic Oriya Osage Osmanya Pahawh_Hmong Palmyrene \
    Pau_Cin_Hau Phags_Pa Phoenician Psalter_Pahlavi Rejang Runic Samaritan Saurashtra Sharada Shavian \
    Siddham SignWriting Sinhala Sogdian Sora_Sompeng Soyombo Sundanese Syloti_Nagri Syriac Tagalog \
    Tagbanwa Tai_Le Tai_Tham Tai_Viet Takri Tamil Tangut Telugu Thaana Thai Tibetan Tifinagh Tirhuta \
    Ugaritic Vai Wancho Warang_Citi Yezidi Yi Zanabazar_Square";

/// A class that matches no character (Go accepts `\x{D800}`, which can never match a string).
const NOTHING: &str = r"[^\x{0}-\x{10FFFF}]";
const ASCII_WORD: &str = r"[\x{30}-\x{39}\x{41}-\x{5A}\x{5F}\x{61}-\x{7A}]";

/// Emits one character so no engine can read it as syntax.
fn push_char(out: &mut String, c: char) {
    if c.is_ascii() {
        // fancy-regex reads `\x{80}`–`\x{FF}` as bytes, so only ASCII is escaped.
        let _ = write!(out, "\\x{{{:X}}}", c as u32);
    } else {
        out.push(c);
    }
}

fn push_range(out: &mut String, lo: u32, hi: u32) {
    // Surrogates are not characters: clip them off the range.
    let lo = if (0xD800..=0xDFFF).contains(&lo) { 0xE000 } else { lo };
    let hi = if (0xD800..=0xDFFF).contains(&hi) { 0xD7FF } else { hi };
    let (Some(lo_c), Some(hi_c)) = (char::from_u32(lo), char::from_u32(hi)) else {
        return;
    };
    if lo > hi {
        return;
    }
    push_char(out, lo_c);
    if hi != lo {
        out.push('-');
        push_char(out, hi_c);
    }
}

fn group_class(positive: bool, ranges: &[(u32, u32)]) -> String {
    let mut out = String::from(if positive { "[" } else { "[^" });
    for &(lo, hi) in ranges {
        push_range(&mut out, lo, hi);
    }
    out.push(']');
    out
}

/// Go's `parseInt`: decimal, no leading zeros; `None` when not a number.
/// A value too big to be a valid count reads as `u32::MAX`.
fn parse_int(s: &str) -> Option<(u32, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || (digits >= 2 && s.starts_with('0')) {
        return None;
    }
    let value = s[..digits].parse().unwrap_or(u32::MAX);
    Some((value, &s[digits..]))
}

/// Go's `parseRepeat`: `{n}`, `{n,}` (max `None`), `{n,m}`; `None` when `{` is a literal.
fn parse_repeat(s: &str) -> Option<(u32, Option<u32>, &str)> {
    let s = s.strip_prefix('{')?;
    let (min, s) = parse_int(s)?;
    let (max, s) = match s.strip_prefix(',') {
        Some(s) => match s.strip_prefix('}') {
            Some(rest) => return Some((min, None, rest)),
            None => {
                let (max, s) = parse_int(s)?;
                (Some(max), s)
            }
        },
        None => (Some(min), s),
    };
    let rest = s.strip_prefix('}')?;
    Some((min, max, rest))
}

fn unhex(c: char) -> Option<u32> {
    c.to_digit(16)
}

impl Translator {
    fn new(fallback: bool) -> Self {
        let flags = Flags {
            fold: false,
            multi_line: false,
            dot_nl: false,
        };
        Translator {
            fallback,
            needs_fallback: false,
            flags,
            frames: vec![Frame::new(String::new(), flags)],
        }
    }

    fn top(&mut self) -> &mut Frame {
        // The top-level frame is never popped (an unmatched `)` is an error).
        self.frames.last_mut().expect("the top-level frame")
    }

    fn run(mut self, pattern: &str) -> Result<Output, SyntaxError> {
        let mut t = pattern;
        let mut last_repeat: Option<&str> = None;
        while let Some(c) = t.chars().next() {
            let mut repeat = None;
            match c {
                '(' if t[1..].starts_with('?') => t = self.parse_group_prefix(t)?,
                '(' => {
                    self.open(String::from("("))?;
                    t = &t[1..];
                }
                '|' => {
                    let frame = self.top();
                    frame.flush();
                    frame.done.push('|');
                    t = &t[1..];
                }
                ')' => {
                    self.close(pattern)?;
                    t = &t[1..];
                }
                '^' | '$' | '.' => {
                    self.top().push_atom(c.to_string(), 1);
                    t = &t[1..];
                }
                '[' => t = self.parse_class(t)?,
                '*' | '+' | '?' => {
                    let after = &t[1..];
                    let after = self.repeat(t, after, None, last_repeat)?;
                    repeat = Some(t);
                    t = after;
                }
                '{' => match parse_repeat(t) {
                    None => {
                        self.top().push_atom(r"\x{7B}".to_owned(), 1);
                        t = &t[1..];
                    }
                    Some((min, max, after)) => {
                        if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT || min > m) {
                            return error("invalid repeat count", &t[..t.len() - after.len()]);
                        }
                        let after = self.repeat(t, after, Some((min, max)), last_repeat)?;
                        repeat = Some(t);
                        t = after;
                    }
                },
                '\\' => t = self.parse_backslash(t)?,
                _ => {
                    let mut text = String::new();
                    push_char(&mut text, c);
                    self.top().push_atom(text, 1);
                    t = &t[c.len_utf8()..];
                }
            }
            last_repeat = repeat;
        }
        if self.frames.len() != 1 {
            return error("missing closing )", pattern);
        }
        let mut top = self.frames.pop().expect("the top-level frame");
        top.flush();
        Ok(Output {
            out: top.done,
            needs_fallback: self.needs_fallback,
        })
    }

    fn open(&mut self, opening: String) -> Result<(), SyntaxError> {
        if self.frames.len() > MAX_DEPTH {
            return error("expression nests too deeply", &opening);
        }
        self.top().flush();
        let flags = self.flags;
        self.frames.push(Frame::new(opening, flags));
        Ok(())
    }

    fn close(&mut self, pattern: &str) -> Result<(), SyntaxError> {
        if self.frames.len() < 2 {
            return error("unexpected )", pattern);
        }
        let mut frame = self.frames.pop().expect("checked above");
        frame.flush();
        self.flags = frame.flags_at_open;
        let text = format!("{}{})", frame.opening, frame.done);
        self.top().push_atom(text, frame.chain);
        Ok(())
    }

    /// Applies `*`, `+`, `?` (`counts` is `None`) or `{min,max}` to the last atom.
    fn repeat<'a>(
        &mut self,
        before: &'a str,
        after: &'a str,
        counts: Option<(u32, Option<u32>)>,
        last_repeat: Option<&'a str>,
    ) -> Result<&'a str, SyntaxError> {
        // A trailing `?` only makes the repetition lazy, which never changes
        // whether a key matches.
        let after = after.strip_prefix('?').unwrap_or(after);
        if let Some(previous) = last_repeat {
            return error(
                "invalid nested repetition operator",
                &previous[..previous.len() - after.len()],
            );
        }
        let near = &before[..before.len() - after.len()];
        let frame = self.top();
        let Some((atom, _)) = frame.last.as_mut() else {
            return error("missing argument to repetition operator", near);
        };
        let (operator, chain) = match counts {
            None => (before[..1].to_owned(), atom.chain),
            Some((min, max)) => {
                let operator = match max {
                    None => format!("{{{min},}}"),
                    Some(max) if max == min => format!("{{{min}}}"),
                    Some(max) => format!("{{{min},{max}}}"),
                };
                let chain = match max {
                    Some(0) => 1,
                    _ => {
                        let factor = max.unwrap_or(min).max(1);
                        let chain = factor.saturating_mul(atom.chain);
                        if (min >= 2 || max.is_some_and(|m| m >= 2)) && chain > MAX_REPEAT {
                            return error("invalid repeat count", near);
                        }
                        chain
                    }
                };
                (operator, chain)
            }
        };
        atom.text = format!("(?:{}){operator}", atom.text);
        atom.chain = chain;
        Ok(after)
    }

    /// `(?` …: named groups, flag groups, non-capturing groups, look-around.
    fn parse_group_prefix<'a>(&mut self, t: &'a str) -> Result<&'a str, SyntaxError> {
        for look in ["(?=", "(?!", "(?<=", "(?<!"] {
            if let Some(rest) = t.strip_prefix(look) {
                self.needs_fallback = true;
                self.open(look.to_owned())?;
                return Ok(rest);
            }
        }
        let named = if t.len() > 4 && t.starts_with("(?P<") {
            Some(4)
        } else if t.len() > 3 && t.starts_with("(?<") {
            Some(3)
        } else {
            None
        };
        if let Some(start) = named {
            let Some(end) = t.find('>') else {
                return error("invalid named capture", t);
            };
            let name = &t[start..end];
            if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
                return error("invalid named capture", &t[..=end]);
            }
            self.open(String::from("("))?;
            return Ok(&t[end + 1..]);
        }

        // Go's parsePerlFlags loop.
        let mut flags = self.flags;
        let mut negated = false;
        let mut saw_flag = false;
        let mut rest = &t[2..];
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            let set = !negated;
            match c {
                'i' => flags.fold = set,
                'm' => flags.multi_line = set,
                's' => flags.dot_nl = set,
                // Greediness never changes whether a key matches: accept and drop.
                'U' => {}
                '-' if !negated => {
                    negated = true;
                    saw_flag = false;
                    continue;
                }
                // Go: a `-` must be followed by at least one flag.
                ':' | ')' if !negated || saw_flag => {
                    if c == ':' {
                        let mut opening = String::new();
                        flags.emit(&mut opening, ':');
                        // The group restores the flags in force before it.
                        self.open(opening)?;
                        self.flags = flags;
                    } else {
                        self.flags = flags;
                        let mut text = String::new();
                        flags.emit(&mut text, ')');
                        self.top().push_other(&text);
                    }
                    return Ok(rest);
                }
                _ => break,
            }
            saw_flag = true;
        }
        error("invalid or unsupported Perl syntax", &t[..t.len() - rest.len()])
    }

    fn parse_backslash<'a>(&mut self, t: &'a str) -> Result<&'a str, SyntaxError> {
        let next = t[1..].chars().next();
        let simple = |s: &str| Some(s.to_owned());
        let assertion = match next {
            Some('A') => simple(r"\A"),
            Some('z') => simple(r"\z"),
            Some('b') | Some('B') => Some(self.word_boundary(next == Some('b'))),
            Some('C') => return error("invalid escape sequence", &t[..2]),
            Some('Q') => {
                let body = &t[2..];
                let (literal, rest) = match body.find(r"\E") {
                    Some(end) => (&body[..end], &body[end + 2..]),
                    None => (body, ""),
                };
                for c in literal.chars() {
                    let mut text = String::new();
                    push_char(&mut text, c);
                    self.top().push_atom(text, 1);
                }
                return Ok(rest);
            }
            _ => None,
        };
        if let Some(text) = assertion {
            self.top().push_atom(text, 1);
            return Ok(&t[2..]);
        }
        if let Some((text, rest)) = parse_unicode_class(t)? {
            self.top().push_atom(text, 1);
            return Ok(rest);
        }
        if let Some((positive, ranges)) = next.and_then(perl_group) {
            self.top().push_atom(group_class(positive, ranges), 1);
            return Ok(&t[2..]);
        }
        match parse_escape(t) {
            Ok((value, rest)) => {
                self.top().push_atom(literal(value), 1);
                Ok(rest)
            }
            Err(e) => match backreference(t) {
                Some(n) => {
                    self.needs_fallback = true;
                    self.top().push_atom(format!("\\{n}"), 1);
                    Ok(&t[2..])
                }
                None => Err(e),
            },
        }
    }

    fn word_boundary(&self, boundary: bool) -> String {
        if !self.fallback {
            return String::from(if boundary { r"(?-u:\b)" } else { r"(?-u:\B)" });
        }
        // fancy-regex cannot turn Unicode off; spell Go's ASCII boundary out.
        let w = ASCII_WORD;
        if boundary {
            format!("(?-i:(?<={w})(?!{w})|(?<!{w})(?={w}))")
        } else {
            format!("(?-i:(?<={w})(?={w})|(?<!{w})(?!{w}))")
        }
    }

    /// Go's `parseClass`, emitting a canonical class.
    fn parse_class<'a>(&mut self, s: &'a str) -> Result<&'a str, SyntaxError> {
        let mut t = &s[1..];
        let negated = t.starts_with('^');
        if negated {
            t = &t[1..];
        }
        let mut items = String::new();
        let mut first = true;
        loop {
            if t.is_empty() {
                return error("missing closing ]", s);
            }
            if t.starts_with(']') && !first {
                break;
            }
            first = false;
            if t.len() > 2
                && t.starts_with("[:")
                && let Some(end) = t[2..].find(":]")
            {
                let name = &t[..end + 4];
                let inner = &t[2..end + 2];
                let (positive, inner) = match inner.strip_prefix('^') {
                    Some(inner) => (false, inner),
                    None => (true, inner),
                };
                let Some(ranges) = posix_group(inner) else {
                    return error("invalid character class range", name);
                };
                push_group_item(&mut items, positive, ranges);
                t = &t[end + 4..];
                continue;
            }
            if let Some((text, rest)) = parse_unicode_class(t)? {
                items.push_str(&text);
                t = rest;
                continue;
            }
            if let Some((positive, ranges)) = t.strip_prefix('\\').and_then(|r| r.chars().next()).and_then(perl_group) {
                push_group_item(&mut items, positive, ranges);
                t = &t[2..];
                continue;
            }
            let range_start = t;
            let (lo, rest) = parse_class_char(t, s)?;
            t = rest;
            let mut hi = lo;
            if t.len() >= 2 && t.starts_with('-') && !t[1..].starts_with(']') {
                let (h, rest) = parse_class_char(&t[1..], s)?;
                t = rest;
                hi = h;
                if hi < lo {
                    return error(
                        "invalid character class range",
                        &range_start[..range_start.len() - t.len()],
                    );
                }
            }
            push_range(&mut items, lo, hi);
        }
        let rest = &t[1..];
        let text = match (items.is_empty(), negated) {
            // Every item was a surrogate: no character at all.
            (true, false) => NOTHING.to_owned(),
            (true, true) => r"[\x{0}-\x{10FFFF}]".to_owned(),
            (false, false) => format!("[{items}]"),
            (false, true) => format!("[^{items}]"),
        };
        self.top().push_atom(text, 1);
        Ok(rest)
    }
}

/// A Perl or POSIX group inside a class; negated ones nest (fold, then negate, as Go does).
fn push_group_item(items: &mut String, positive: bool, ranges: &[(u32, u32)]) {
    if positive {
        for &(lo, hi) in ranges {
            push_range(items, lo, hi);
        }
    } else {
        items.push_str(&group_class(false, ranges));
    }
}

/// The emitted form of a literal code point (Go allows surrogates; they match nothing).
fn literal(value: u32) -> String {
    match char::from_u32(value) {
        Some(c) => {
            let mut text = String::new();
            push_char(&mut text, c);
            text
        }
        None => NOTHING.to_owned(),
    }
}

/// `\1`–`\9` where Go reads no octal escape: a backreference (our extension).
fn backreference(t: &str) -> Option<u32> {
    let mut chars = t[1..].chars();
    let digit = chars.next()?.to_digit(10).filter(|d| *d > 0)?;
    let octal_follows = chars.next().is_some_and(|c| ('0'..='7').contains(&c));
    (digit >= 8 || !octal_follows).then_some(digit)
}

/// Go's `parseUnicodeClass`: `\pL`, `\p{Greek}`, `\P{^Greek}`; `None` if `t` is not one.
fn parse_unicode_class(t: &str) -> Result<Option<(String, &str)>, SyntaxError> {
    let mut positive = match t.get(..2) {
        Some(r"\p") => true,
        Some(r"\P") => false,
        _ => return Ok(None),
    };
    let after = &t[2..];
    let (seq, name, rest) = match after.chars().next() {
        Some('{') => {
            let Some(end) = t.find('}') else {
                return error("invalid character class range", t);
            };
            (&t[..=end], &t[3..end], &t[end + 1..])
        }
        Some(c) => {
            let len = 2 + c.len_utf8();
            (&t[..len], &t[2..len], &t[len..])
        }
        None => (t, "", ""),
    };
    let name = match name.strip_prefix('^') {
        Some(name) => {
            positive = !positive;
            name
        }
        None => name,
    };
    let listed = |table: &str| table.split(' ').any(|entry| entry == name);
    let property = if name == "Any" || listed(CATEGORIES) {
        name.to_owned()
    } else if listed(SCRIPTS) {
        // Spelled as a script so the crates cannot read it as another property.
        format!("sc={name}")
    } else {
        return error("invalid character class range", seq);
    };
    let text = if positive {
        format!(r"\p{{{property}}}")
    } else {
        format!(r"\P{{{property}}}")
    };
    Ok(Some((text, rest)))
}

/// Go's `parseClassChar`.
fn parse_class_char<'a>(t: &'a str, whole: &str) -> Result<(u32, &'a str), SyntaxError> {
    match t.chars().next() {
        None => error("missing closing ]", whole),
        Some('\\') => parse_escape(t),
        Some(c) => Ok((c as u32, &t[c.len_utf8()..])),
    }
}

/// Go's `parseEscape`: one escaped character (`t` starts with `\`).
fn parse_escape(t: &str) -> Result<(u32, &str), SyntaxError> {
    let s = &t[1..];
    let Some(c) = s.chars().next() else {
        return error("trailing backslash at end of expression", "");
    };
    let mut rest = &s[c.len_utf8()..];
    let invalid = |rest: &str| error("invalid escape sequence", &t[..t.len() - rest.len()]);
    let octal = |c: Option<char>| c.filter(|c| ('0'..='7').contains(c));
    match c {
        '1'..='7' if octal(rest.chars().next()).is_none() => invalid(rest),
        '0'..='7' => {
            let mut value = c as u32 - '0' as u32;
            for _ in 1..3 {
                let Some(d) = octal(rest.chars().next()) else { break };
                value = value * 8 + (d as u32 - '0' as u32);
                rest = &rest[1..];
            }
            Ok((value, rest))
        }
        'x' => {
            let Some(first) = rest.chars().next() else {
                return invalid(rest);
            };
            rest = &rest[first.len_utf8()..];
            if first == '{' {
                let mut value: u32 = 0;
                let mut digits = 0;
                loop {
                    let Some(c) = rest.chars().next() else {
                        return invalid(rest);
                    };
                    rest = &rest[c.len_utf8()..];
                    if c == '}' {
                        break;
                    }
                    let Some(v) = unhex(c) else {
                        return invalid(rest);
                    };
                    value = value * 16 + v;
                    if value > 0x10FFFF {
                        return invalid(rest);
                    }
                    digits += 1;
                }
                if digits == 0 {
                    return invalid(rest);
                }
                return Ok((value, rest));
            }
            let Some(second) = rest.chars().next() else {
                return invalid(rest);
            };
            rest = &rest[second.len_utf8()..];
            match (unhex(first), unhex(second)) {
                (Some(x), Some(y)) => Ok((x * 16 + y, rest)),
                _ => invalid(rest),
            }
        }
        'a' => Ok((0x07, rest)),
        'f' => Ok((0x0C, rest)),
        'n' => Ok((0x0A, rest)),
        'r' => Ok((0x0D, rest)),
        't' => Ok((0x09, rest)),
        'v' => Ok((0x0B, rest)),
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((c as u32, rest)),
        _ => invalid(rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(p: &str) -> String {
        match translate(p) {
            Ok(Translation::Linear(s)) => s,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn go_rejections() {
        for p in [
            "a**",
            "a++",
            "a*?*",
            "x{2,1}",
            "x{1001}",
            "(a{1000}){2}",
            "x{2}{3}",
            "x{2}*",
            r"\q",
            r"\Z",
            r"\C",
            r"\1",
            r"\8",
            r"\k<n>",
            "(?x)a",
            "(?i-)",
            "(?-)",
            "(?P=n)",
            "(?P<n>",
            "(?P<>a)",
            "(?P<a-b>a)",
            r"\p{greek}",
            r"\p{Letter}",
            r"\p",
            "[[:foo:]]",
            "[a--]",
            "[z-a]",
            r"[\b]",
            r"[\Q]",
            r"\E",
            r"\x4",
            r"\x{}",
            r"\x{110000}",
            r"\é",
            "(?i)*",
            "a|*",
            "*",
            "{2}",
            r"\Q\E*",
            "(",
            ")",
            "[a",
            "a\\",
            "[]",
        ] {
            let lookless = !p.contains(r"\1") && !p.contains(r"\8");
            if lookless {
                assert!(translate(p).is_err(), "{p} should be rejected: {:?}", translate(p));
            }
        }
    }

    #[test]
    fn backreferences_and_look_around_need_the_fallback() {
        for p in [
            r"(a)\1",
            r"(a)\8",
            "(?=a)",
            "(?!a)",
            "(?<=a)b",
            "(?<!a)b",
            r"^private-(?!x$).+$",
        ] {
            assert!(matches!(translate(p), Ok(Translation::Fallback(_))), "{p}");
        }
    }

    #[test]
    fn go_spellings_become_canonical() {
        assert_eq!(linear("a{,2}"), r"\x{61}\x{7B}\x{2C}\x{32}\x{7D}");
        assert_eq!(linear(r"\12"), r"\x{A}");
        assert_eq!(linear(r"\d"), r"[\x{30}-\x{39}]");
        assert_eq!(linear("(?ii)a"), r"(?i-ms)\x{61}");
        assert_eq!(linear("a(?i)*"), r"(?:\x{61})*(?i-ms)");
        assert_eq!(linear(r"\Qa.\E"), r"\x{61}\x{2E}");
        assert_eq!(linear("(?P<1>a)"), r"(\x{61})");
        assert_eq!(linear(r"\x{D800}"), NOTHING);
        assert_eq!(linear(r"\p{Greek}"), r"\p{sc=Greek}");
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let deep = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(translate(&deep).is_ok());
        let deeper = format!("{}a{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert!(translate(&deeper).is_err());
        assert!(translate(&"(".repeat(60_000)).is_err());
    }
}
