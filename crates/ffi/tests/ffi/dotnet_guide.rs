//! The .NET guide (`docs/bindings/dotnet.md`) declares the C API in C#: no .NET SDK runs here,
//! so its declarations are checked against `include/leasehold.h` instead: every imported
//! function exists with as many parameters, of the same widths, and the options struct has the
//! header's fields in the header's order.

use std::path::Path;

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap()
}

/// The text between `open` (exclusive) and the `close` that balances it.
fn parenthesized(text: &str) -> &str {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return &text[..i],
            ')' => depth -= 1,
            _ => {}
        }
    }
    text
}

/// The parameters of a parameter list, split at top-level commas; `void` or nothing is none.
fn parameters(list: &str) -> Vec<String> {
    let list = list.trim();
    if list.is_empty() || list == "void" {
        return Vec::new();
    }
    let mut out = vec![String::new()];
    let mut depth = 0;
    for c in list.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out.into_iter()
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// A C parameter's width class: pointers (and handles) are one class, then each integer width.
fn c_class(parameter: &str) -> &'static str {
    if parameter.contains('*') || parameter.contains("callback") {
        "pointer"
    } else if parameter.contains("int64_t") {
        "64"
    } else if parameter.contains("uint16_t") {
        "16"
    } else {
        "32"
    }
}

/// The same for a C# parameter: `out`/`ref`, `IntPtr`, strings and delegates pass pointers.
fn csharp_class(parameter: &str) -> &'static str {
    let parameter = parameter.rsplit(']').next().unwrap_or(parameter).trim();
    if parameter.starts_with("out ")
        || parameter.starts_with("ref ")
        || parameter.starts_with("IntPtr")
        || parameter.starts_with("string")
        || parameter.starts_with("SeatCallback")
    {
        "pointer"
    } else if parameter.starts_with("ulong") || parameter.starts_with("long") {
        "64"
    } else if parameter.starts_with("ushort") {
        "16"
    } else {
        "32"
    }
}

#[test]
fn the_dotnet_guide_declares_the_c_api_as_the_header_does() {
    let guide = read("../../docs/bindings/dotnet.md");
    let header = read("include/leasehold.h");
    let mut checked = 0;
    for import in guide.split("[DllImport(Lib)]").skip(1) {
        let (before, after) = import.split_once('(').unwrap();
        let name = before.split_whitespace().last().unwrap();
        let declared = parameters(parenthesized(after));

        // The prototype: a line of code (not of a comment) that declares `name(`.
        let call = format!("{name}(");
        let line_start = header
            .match_indices(&call)
            .filter(|(at, _)| header[..*at].ends_with([' ', '*']))
            .map(|(at, _)| header[..at].rfind('\n').map_or(0, |nl| nl + 1))
            .find(|&start| header[start..].starts_with(|c: char| c.is_ascii_alphabetic()))
            .unwrap_or_else(|| panic!("{name} is not declared in leasehold.h"));
        let prototype = &header[line_start..];
        let prototype = &prototype[prototype.find(&call).unwrap() + call.len()..];
        let expected = parameters(parenthesized(prototype));

        let widths = |ps: &[String], class: fn(&str) -> &'static str| -> Vec<&'static str> {
            ps.iter().map(|p| class(p)).collect()
        };
        assert_eq!(
            widths(&declared, csharp_class),
            widths(&expected, c_class),
            "{name}: C# {declared:?} against C {expected:?}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "the guide's imports: {checked}");

    // The options struct: the header's fields, in order, of the same widths.
    let c_struct = header
        .split("} leasehold_checkout_options;")
        .next()
        .and_then(|before| before.rsplit("typedef struct {").next())
        .unwrap();
    let c_fields: Vec<&str> = c_struct
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(';'))
        .collect();
    let cs_struct = guide
        .split("public struct CheckoutOptions")
        .nth(1)
        .and_then(|after| after.split('}').next())
        .unwrap();
    let cs_fields: Vec<&str> = cs_struct
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("public "))
        .collect();
    let c_types: Vec<&str> = c_fields.iter().map(|f| c_class(f)).collect();
    let cs_types: Vec<&str> = cs_fields
        .iter()
        .map(|f| csharp_class(f.trim_start_matches("public ")))
        .collect();
    assert_eq!(cs_types, c_types, "{cs_fields:?} against {c_fields:?}");
    for (cs, c) in cs_fields.iter().zip(&c_fields) {
        let c_name = c.trim_end_matches(';').split_whitespace().last().unwrap();
        let cs_name = cs.split_whitespace().nth(2).unwrap().trim_end_matches(';');
        assert_eq!(
            cs_name.to_lowercase(),
            c_name.replace('_', ""),
            "field order: {cs_fields:?} against {c_fields:?}"
        );
    }
}
