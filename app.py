"""LeNet-5 on CIFAR-10 in the browser: `streamlit run app.py`. The router: the page list, then the chosen page.

A page is one file in pages/ plus one line below. Nothing heavy is imported here: the navigation is declared
before torch loads, so a first visit never shows Streamlit's list of the pages/ folder's files while it waits.
"""

import streamlit as st

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/dataset.py", title="Dataset", icon=":material/photo_library:"),
    st.Page("pages/model.py", title="Model", icon=":material/account_tree:"),
    st.Page("pages/inside.py", title="Inside the network", icon=":material/visibility:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    st.Page("pages/classify.py", title="Classify", icon=":material/image_search:"),
]


def main() -> None:
    st.set_page_config(page_title="LeNet-5 on CIFAR-10", page_icon=":material/neurology:", layout="wide")
    st.navigation(PAGES).run()


if __name__ == "__main__":  # Streamlit runs this file as __main__; pages import it only for the guard in pages/_router.py
    main()
