//! The dashboard's two server-rendered pages (sign-in, and the signed-in shell that the script
//! fills from the JSON API), and the policy they are served under.

/// The pages' policy: their own script, style and API only; no inline script, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Text made safe for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/ui/assets/app.css\"></head>",
        escape(title)
    )
}

/// The sign-in form; `error` says why the last attempt failed.
pub fn sign_in(error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!(
            "<p class=\"error\" role=\"alert\" id=\"sign-in-error\">{}</p>",
            escape(e)
        )
    });
    format!(
        "{}<body class=\"sign-in\"><main>\
         <h1>Leasehold</h1>\
         <form method=\"post\" action=\"/ui/login\">\
         <label for=\"token\">Account admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required autofocus>\
         {error}\
         <button type=\"submit\">Sign in</button>\
         </form>\
         <p class=\"hint\">The token stays on the server: this browser keeps only a session \
         cookie that scripts cannot read, valid for 8 hours.</p>\
         </main></body></html>",
        head("Sign in · Leasehold")
    )
}

/// The signed-in page: the account, the navigation, and an empty main area the script fills.
pub fn dashboard(account_id: &str, account_name: &str, csrf: &str) -> String {
    let (id, name, csrf) = (escape(account_id), escape(account_name), escape(csrf));
    let kinds = escape(&leasehold_store::AUDIT_EVENT_KINDS.join(","));
    format!(
        "{}<body>\
         <meta name=\"leasehold-account\" content=\"{id}\">\
         <meta name=\"leasehold-csrf\" content=\"{csrf}\">\
         <meta name=\"leasehold-audit-kinds\" content=\"{kinds}\">\
         <header><a class=\"brand\" href=\"#/\">Leasehold</a>\
         <span class=\"account\" title=\"{id}\">{name}</span>\
         <nav><a href=\"#/\">Licenses</a><a href=\"#/users\">Users</a><a href=\"#/audit\">Audit log</a></nav>\
         <form method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" class=\"link\">Sign out</button></form></header>\
         <main id=\"app\" aria-live=\"polite\"><p>Loading…</p></main>\
         <script src=\"/ui/assets/app.js\" defer></script></body></html>",
        head(&format!("{account_name} · Leasehold"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        let page = dashboard("a\"1", "<script>x</script>", "c");
        assert!(!page.contains("<script>x"));
        assert!(page.contains("&lt;script&gt;x"));
        assert!(page.contains("a&quot;1"));
        assert!(sign_in(Some("<b>")).contains("&lt;b&gt;"));
    }
}
