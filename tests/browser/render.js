// Renders the Markdown in <script id="markdown"> the way GitHub shows a comment: marked for the
// Markdown, then every ```mermaid fence drawn by mermaid as an inline SVG. Ends by appending
// <pre id="result">ok</pre> (or "error: ...") for tests/test_report_browser.py to read from the DOM.
(async () => {
  const result = document.createElement("pre");
  result.id = "result";
  try {
    const markdown = JSON.parse(document.getElementById("markdown").textContent);
    document.getElementById("document").innerHTML = marked.parse(markdown);
    for (const code of document.querySelectorAll("code.language-mermaid")) {
      const chart = document.createElement("div");
      chart.className = "mermaid";
      chart.textContent = code.textContent;
      code.parentElement.replaceWith(chart);
    }
    mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
    await mermaid.run({ querySelector: ".mermaid" });
    result.textContent = "ok";
  } catch (error) {
    result.textContent = `error: ${error}`;
  }
  document.body.appendChild(result);
})();
