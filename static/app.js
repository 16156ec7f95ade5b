// Copy buttons: each `button.copy[data-copy=ID]` copies the text of #ID.
const copyButtons = document.querySelectorAll("button.copy[data-copy]");

for (const button of copyButtons) {
  button.addEventListener("click", async () => {
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const label = button.textContent;
    try {
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = "Copied";
    } catch {
      // Clipboard refused (insecure origin, permissions): select the text
      // so the person can copy it by hand.
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
    button.dataset.copied = source.textContent;
    setTimeout(() => { button.textContent = label; }, 2000);
  });
}
