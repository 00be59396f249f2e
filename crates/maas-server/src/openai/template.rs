//! Chat templates: the Jinja template shipped in the model (GGUF `tokenizer.chat_template`),
//! rendered with minijinja and Python-compatible string methods, as HF tokenizers render it.

use maas_core::{Error, Result};
use serde::Serialize;

/// Used when a model ships no template: ChatML, which most small instruct models were tuned on.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One message as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateMessage {
    pub role: String,
    pub content: String,
}

/// Renders `messages` into a prompt that ends where the assistant's answer begins.
pub fn render(
    template: Option<&str>,
    messages: &[TemplateMessage],
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                message,
            ))
        },
    );
    let source = template.unwrap_or(CHATML);
    let tmpl = env
        .template_from_str(source)
        .map_err(|e| Error::internal(format!("the model's chat template does not parse: {e}")))?;
    tmpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    // A template that raises is rejecting these messages (e.g. roles out of order): a client error.
    .map_err(|e| {
        Error::invalid(format!(
            "messages: the model's chat template rejected them: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(list: &[(&str, &str)]) -> Vec<TemplateMessage> {
        list.iter()
            .map(|(r, c)| TemplateMessage {
                role: r.to_string(),
                content: c.to_string(),
            })
            .collect()
    }

    #[test]
    fn chatml_is_the_fallback() {
        let out = render(None, &msgs(&[("user", "hi")]), "", "").unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let t = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ bos_token }}{{ messages[0]['content'].strip().upper() }}";
        assert_eq!(
            render(Some(t), &msgs(&[("user", "  hi ")]), "<s>", "</s>").unwrap(),
            "<s>HI"
        );
        let err = render(Some(t), &msgs(&[("assistant", "x")]), "", "").unwrap_err();
        assert!(
            err.message.contains("first must be user"),
            "{}",
            err.message
        );
    }
}
