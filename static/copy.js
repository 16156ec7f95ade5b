// Copy buttons: a `button.copy[data-copy=ID]` copies the text of #ID.
// One listener on the document, so buttons added later work too.

const labels = new WeakMap();
const timers = new WeakMap();

function flash(button, text) {
  if (!labels.has(button)) labels.set(button, button.textContent);
  button.textContent = text;
  clearTimeout(timers.get(button));
  timers.set(button, setTimeout(() => { button.textContent = labels.get(button); }, 2000));
}

function selectText(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.textContent;
  try {
    await navigator.clipboard.writeText(text);
    flash(button, "Copied");
  } catch {
    // Clipboard refused (insecure origin, permissions): select the text
    // so the person can copy it by hand.
    selectText(source);
    flash(button, "Press Ctrl+C");
  }
  // What was copied, for people inspecting the page and for the tests.
  button.dataset.copied = text;
});
