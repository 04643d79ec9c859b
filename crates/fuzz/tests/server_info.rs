//! The server-info parser on anything a job, an editor or a full disk could leave in the file:
//! a URL it returns is an http(s) URL with a host, taken from the file and trimmed; only white
//! space reads as "not written yet"; everything else is refused with an excerpt to show.

use fuzz::{corpus, mutated};
use proptest::prelude::*;
use reqwest::Url;
use sweep::discover::{parse_server_info, BadServerInfo};

fn seeds() -> Vec<Vec<u8>> {
    corpus(&["crates/fuzz/corpus/server-info"], &[".txt"])
}

fn check(input: &[u8]) -> Result<(), TestCaseError> {
    match parse_server_info(input) {
        Ok(Some(url)) => {
            let url = url.as_str();
            // Text, perhaps cut off mid-character at its end.
            let text = match std::str::from_utf8(input) {
                Ok(t) => t,
                Err(e) => std::str::from_utf8(&input[..e.valid_up_to()]).expect("valid prefix"),
            };
            let first = text.lines().map(str::trim).find(|l| !l.is_empty());
            // The same URL as the first line, in normal form, trailing slashes aside.
            let normal = |u: &str| {
                Url::parse(u)
                    .map(|u| u.as_str().trim_end_matches('/').to_string())
                    .ok()
            };
            let written = first.and_then(normal).expect("the first line is a URL");
            prop_assert_eq!(normal(url), Some(written));
            prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
            prop_assert!(!url.ends_with('/'));
        }
        Ok(None) => {
            // White space, perhaps followed by the start of a character still being written.
            let text = match std::str::from_utf8(input) {
                Ok(t) => t,
                Err(e) => {
                    prop_assert!(e.error_len().is_none(), "{:?}", input);
                    std::str::from_utf8(&input[..e.valid_up_to()]).expect("valid prefix")
                }
            };
            prop_assert!(text.trim().is_empty(), "{:?}", input);
        }
        Err(BadServerInfo::NotAUrl(excerpt)) => {
            prop_assert!(!excerpt.chars().any(char::is_control), "{:?}", excerpt);
        }
        Err(BadServerInfo::NotText { bytes }) => {
            prop_assert_eq!(bytes, input.len());
            prop_assert!(std::str::from_utf8(input).is_err());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz::config(1024))]

    #[test]
    fn changed_files_read_as_a_url_as_empty_or_as_refused(input in mutated(seeds())) {
        check(&input)?;
    }

    #[test]
    fn any_bytes_read_as_a_url_as_empty_or_as_refused(
        input in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        check(&input)?;
    }

    #[test]
    fn a_url_written_with_any_padding_is_read_back(
        https in any::<bool>(),
        host in "h[a-z0-9-]{0,12}(\\.[a-z][a-z0-9]{0,8}){0,3}",
        port in proptest::option::of(1u16..),
        slash in any::<bool>(),
        before in "[ \t\r\n]{0,6}",
        after in "[ \t]{0,3}(\r?\n[ -~]{0,20}){0,2}",
    ) {
        let scheme = if https { "https" } else { "http" };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let url = format!("{scheme}://{host}{port}");
        let file = format!("{before}{url}{}{after}", if slash { "/" } else { "" });
        let read = parse_server_info(file.as_bytes());
        // Padding changes nothing, and a URL already in normal form comes back as written.
        prop_assert_eq!(&read, &parse_server_info(url.as_bytes()));
        let default_port = matches!(port.as_str(), ":80" | ":443");
        if !default_port {
            let read = read.map(|u| u.map(|u| u.to_string()));
            prop_assert_eq!(read, Ok(Some(url)));
        }
    }
}
