"""The Gradio web app: one module per tab, composed in layout.py. No tensor math lives here."""
