"""The example client code the UI's server panel shows (and the README quotes), filled in with the real address."""

from __future__ import annotations


def example_code(base_url: str, api_key: str = "", model: str = "gpt-oss-20b") -> str:
    """The Python snippet shown in the UI and the README, filled in with the real address and key."""
    key = api_key or "not-needed"
    return (
        "from openai import OpenAI\n"
        "\n"
        "client = OpenAI(\n"
        f'    base_url="{base_url}",\n'
        f'    api_key="{key}",\n'
        ")\n"
        "\n"
        "response = client.chat.completions.create(\n"
        f'    model="{model}",\n'
        "    messages=[\n"
        '        {"role": "system", "content": "You are a helpful assistant."},\n'
        '        {"role": "user", "content": "Explain what MXFP4 quantization is."},\n'
        "    ],\n"
        '    reasoning_effort="medium",  # low, medium or high\n'
        ")\n"
        "\n"
        "message = response.choices[0].message\n"
        'print("Reasoning:", message.reasoning_content)  # gpt-oss\'s chain of thought\n'
        'print("Answer:", message.content)\n'
    )
