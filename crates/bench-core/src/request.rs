//! Request bodies, serialized once before the run so sending costs no JSON work.

use crate::config::RunConfig;
use crate::prompt::{Prompt, PromptRole};
use crate::stream::ApiKind;
use bytes::Bytes;
use serde_json::json;

/// One request ready to send.
#[derive(Debug, Clone)]
pub struct RequestPlan {
    pub index: usize,
    /// Sent as `x-request-id` (vLLM takes it as the request's id), so a server's own log can be
    /// matched to the client's records: `inferperf-m<index>` measured, `inferperf-w<index>` warm-up.
    pub request_id: String,
    pub body: Bytes,
    pub input_tokens: u64,
    pub max_tokens: u64,
}

/// The JSON body for `prompt`: streaming with usage, greedy, `max_tokens` fixed.
///
/// Chat requests put the prompt in one user message and use `max_completion_tokens`, as
/// `vllm bench serve` does; the server then adds its chat template's tokens to the count.
pub fn body(config: &RunConfig, prompt: &Prompt, max_tokens: u64) -> Bytes {
    let mut body = match config.endpoint.api {
        ApiKind::Completions => json!({
            "model": config.model,
            "prompt": prompt.text,
            "max_tokens": max_tokens,
        }),
        ApiKind::Chat => json!({
            "model": config.model,
            "messages": [{"role": "user", "content": prompt.text}],
            "max_completion_tokens": max_tokens,
        }),
    };
    let extra = json!({
        "temperature": 0.0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let (Some(map), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        map.extend(extra.clone());
        if config.ignore_eos {
            map.insert("ignore_eos".into(), json!(true));
        }
        if config.continuous_usage_stats {
            map.insert(
                "stream_options".into(),
                json!({"include_usage": true, "continuous_usage_stats": true}),
            );
        }
    }
    Bytes::from(body.to_string())
}

/// Plans for `prompts` of `role`, numbered from 0. Each request id starts with the role's tag
/// (`m` measured, `w` warm-up), after the client's number when there are several
/// (`inferperf-c1-m0`). Measured requests ask for `output_len` tokens, warm-up ones for
/// [`RunConfig::warmup_max_tokens`].
pub fn plans(config: &RunConfig, prompts: &[Prompt], role: PromptRole) -> Vec<RequestPlan> {
    let client = config.client.map_or_else(String::new, |c| format!("c{c}-"));
    let (tag, max_tokens) = match role {
        PromptRole::Measured => ('m', config.output_len),
        PromptRole::Warmup => ('w', config.warmup_max_tokens()),
    };
    prompts
        .iter()
        .enumerate()
        .map(|(index, p)| RequestPlan {
            index,
            request_id: format!("inferperf-{client}{tag}{index}"),
            body: body(config, p, max_tokens),
            input_tokens: p.tokens,
            max_tokens,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;

    fn prompt() -> Prompt {
        Prompt {
            text: "hi \"there\"".into(),
            tokens: 3,
            target: 3,
        }
    }

    #[test]
    fn completion_body_streams_with_usage_and_ignore_eos() {
        let mut c = RunConfig::new("m", "t", "http://h".parse().expect("a base URL"));
        c.output_len = 7;
        let v: serde_json::Value =
            serde_json::from_slice(&body(&c, &prompt(), c.output_len)).expect("json");
        assert_eq!(v["prompt"], "hi \"there\"");
        assert_eq!(v["max_tokens"], 7);
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["ignore_eos"], true);
        assert_eq!(v["temperature"], 0.0);
    }

    #[test]
    fn chat_body_uses_messages() {
        let mut c = RunConfig::new("m", "t", "http://h".parse().expect("a base URL"));
        c.endpoint = Endpoint::parse("/v1/chat/completions").expect("known route");
        c.ignore_eos = false;
        let v: serde_json::Value =
            serde_json::from_slice(&body(&c, &prompt(), c.output_len)).expect("json");
        assert_eq!(v["messages"][0]["content"], "hi \"there\"");
        assert_eq!(v["max_completion_tokens"], 128);
        assert!(v.get("ignore_eos").is_none());
        assert!(v["stream_options"].get("continuous_usage_stats").is_none());
        c.continuous_usage_stats = true;
        let v: serde_json::Value =
            serde_json::from_slice(&body(&c, &prompt(), c.output_len)).expect("json");
        assert_eq!(v["stream_options"]["continuous_usage_stats"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn warm_up_requests_ask_for_their_own_length_when_given() {
        let mut c = RunConfig::new("m", "t", "http://h".parse().expect("a base URL"));
        c.output_len = 128;
        let asked = |c: &RunConfig, role| {
            let plan = plans(c, &[prompt()], role).remove(0);
            let v: serde_json::Value = serde_json::from_slice(&plan.body).expect("json");
            (plan.request_id, plan.max_tokens, v["max_tokens"].clone())
        };
        let full = ("inferperf-w0".to_string(), 128, serde_json::json!(128));
        assert_eq!(asked(&c, PromptRole::Warmup), full);
        c.warmup_output_len = Some(2);
        let short = ("inferperf-w0".to_string(), 2, serde_json::json!(2));
        assert_eq!(asked(&c, PromptRole::Warmup), short);
        let measured = ("inferperf-m0".to_string(), 128, serde_json::json!(128));
        assert_eq!(asked(&c, PromptRole::Measured), measured);
    }
}
