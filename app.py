"""LeNet-5 on CIFAR-10 in the browser: `streamlit run app.py`. Only the router; each page is a file in app_pages/.

The folder is not called pages/: Streamlit runs a server's first script run in its old pages-folder mode whenever
a pages/ folder sits next to the main script, so a first visit to /train after a restart would miss this router.
"""

import streamlit as st

from app_pages._shared import PAGES, page

st.set_page_config(page_title="LeNet-5 on CIFAR-10", page_icon=":material/neurology:", layout="wide")
st.navigation([page(name) for name in PAGES]).run()
