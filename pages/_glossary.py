"""The field's words in plain language, for a 14-year-old: one sentence each, shown where the word is used."""

import streamlit as st

from pages._i18n import N_, _

TERMS = {
    "batch": (N_("batch"), N_("A handful of images the network looks at together before it changes its weights once.")),
    "epoch": (N_("epoch"), N_("One pass through all the training images. Training usually takes several.")),
    "loss": (N_("loss"), N_("A score for how wrong the network's guesses are: lower is better. Guessing at random scores about 2.3.")),
    "logits": (N_("logits"), N_("The ten raw scores the network gives, one per class, before softmax turns them into probabilities.")),
    "learning rate": (N_("learning rate"), N_("How big a step the network takes each time it changes its weights. Too big and it "
                                              "overshoots; too small and it learns slowly.")),
    "momentum": (N_("momentum"), N_("Keeps part of the last step going, like a ball rolling downhill, so the path is smoother.")),
}


def meaning(term: str) -> str:
    """One term's plain meaning, for a widget's help= tooltip."""
    return _(TERMS[term][1])


def words_on_this_page(*terms: str) -> None:
    """A small expander: the words this page uses, each with its meaning."""
    with st.expander(_("Words on this page"), icon=":material/menu_book:"):
        st.markdown("\n".join(f"- **{_(TERMS[t][0])}**: {_(TERMS[t][1])}" for t in terms))
