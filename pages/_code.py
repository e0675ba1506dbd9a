"""The plain-PyTorch code each page shows in its "PyTorch code" expander, written as the walkthrough writes it.

Every snippet runs as is (those that read CIFAR-10 download it into ./data the first time). They are built from
shared pieces, so the network, the data loading and the imports are written once. Each is a plain string with its
comments in English (what tests run); a comment is written as $name in the code and given beside it through N_(),
so pybabel extracts it and pytorch_code() shows it in the reader's language.
"""

from string import Template

import streamlit as st

from pages._i18n import N_, _


def snippet(code: str, **comments: str) -> str:
    """The code with each $name replaced by its comment (English: the message id the catalogs translate)."""
    return Template(code).substitute(comments)


def translated(code: str) -> str:
    """The code with every comment in the session's language: the text after "# " is looked up in the catalog."""
    lines = []
    for line in code.splitlines():
        code_part, mark, comment = line.partition("# ")
        if mark and (not code_part.strip() or code_part.endswith("  ")):  # a comment, not a "# " inside a string
            line = code_part + mark + _(comment)
        lines.append(line)
    return "\n".join(lines) + ("\n" if code.endswith("\n") else "")


def pytorch_code(code: str) -> None:
    """The page's "PyTorch code" expander: a few lines of plain PyTorch doing what the page shows (none when presenting)."""
    from pages._classroom import presenting

    if presenting():
        return
    with st.expander(_("PyTorch code"), icon=":material/code:"):
        st.code(translated(code), language="python")


IMPORTS = """\
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torchvision
import torchvision.transforms as transforms
"""

SEED = snippet("""\
torch.manual_seed(0)  # $seed
classes = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
""", seed=N_("the same seed: the same initial weights and the same shuffles, run after run"))

DATA = snippet("""\
# $transform
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
trainset = torchvision.datasets.CIFAR10(root="./data", train=True, download=True, transform=transform)
testset = torchvision.datasets.CIFAR10(root="./data", train=False, download=True, transform=transform)
trainloader = torch.utils.data.DataLoader(trainset, batch_size=4, shuffle=True)
testloader = torch.utils.data.DataLoader(testset, batch_size=4, shuffle=False)
""", transform=N_("ToTensor: uint8 0..255 -> float 0..1; Normalize(0.5, 0.5): 0..1 -> -1..1, per channel"))

NET = snippet("""\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)  # 3x32x32 -> 6x28x28
        self.pool = nn.MaxPool2d(2, 2)  # $pool
        self.conv2 = nn.Conv2d(6, 16, 5)  # 6x14x14 -> 16x10x10
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)  # $logits

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


net = Net()
""", pool=N_("halves height and width"), logits=N_("one score (logit) per class"))

LOAD_TRAINED = snippet("""\
net.load_state_dict(torch.load("./cifar_net.pth", weights_only=True))  # $saved
net.eval()
""", saved=N_("saved by the Train page's code"))

OVERVIEW = IMPORTS + "\n" + SEED + """\
print("PyTorch", torch.__version__, "torchvision", torchvision.__version__)
print("GPU available:", torch.cuda.is_available())
"""

DATASET = IMPORTS + "\n" + SEED + "\n" + DATA + snippet("""
images, labels = next(iter(trainloader))  # $batch
print(" ".join(f"{classes[label]:5s}" for label in labels))
print("values after Normalize:", images.min().item(), "to", images.max().item())  # $range
grid = torchvision.utils.make_grid(images / 2 + 0.5)  # $undo
torchvision.utils.save_image(grid, "batch.png")
""", batch=N_("one batch: 4 x 3 x 32 x 32"), range=N_("about -1 to 1"),
    undo=N_("undo Normalize for display: -1..1 -> 0..1"))

MODEL = IMPORTS + "\n" + SEED + "\n" + NET + snippet("""
print(net)
print(sum(p.numel() for p in net.parameters()), "parameters")  # 62006

criterion = nn.CrossEntropyLoss()  # $criterion
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

images, labels = torch.randn(4, 3, 32, 32), torch.tensor([3, 8, 8, 0])
loss = criterion(net(images), labels)
print("loss before training:", loss.item())  # $before
""", criterion=N_("softmax over the 10 scores, then -log(probability of the true class)"),
    before=N_("close to ln(10) = 2.30: every class equally likely"))

TRAIN = IMPORTS + "\n" + SEED + "\n" + DATA + "\n" + NET + snippet("""
criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

for epoch in range(2):  # $twice
    running_loss = 0.0
    for i, (inputs, labels) in enumerate(trainloader):
        optimizer.zero_grad()  # $zero
        loss = criterion(net(inputs), labels)  # $forward
        loss.backward()  # $backward
        optimizer.step()  # $step
        running_loss += loss.item()
        if i % 2000 == 1999:  # $print
            print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / 2000:.3f}")
            running_loss = 0.0

torch.save(net.state_dict(), "./cifar_net.pth")
""", twice=N_("loop over the dataset twice"), zero=N_("forget the previous step's gradients"), forward=N_("forward"),
    backward=N_("backward: the gradient of the loss for every weight"), step=N_("a small step against the gradient"),
    print=N_("print the mean loss every 2000 mini-batches"))

EVALUATE = IMPORTS + "\n" + SEED + "\n" + DATA + "\n" + NET + LOAD_TRAINED + snippet("""
correct_pred = {name: 0 for name in classes}
total_pred = {name: 0 for name in classes}
with torch.no_grad():  # $no_grad
    for images, labels in testloader:
        predictions = net(images).argmax(1)  # $argmax
        for label, prediction in zip(labels, predictions):
            correct_pred[classes[label]] += int(label == prediction)
            total_pred[classes[label]] += 1

print(f"Accuracy of the network on the 10000 test images: {100 * sum(correct_pred.values()) // 10000} %")
for name in classes:
    print(f"Accuracy for class: {name:5s} is {100 * correct_pred[name] / total_pred[name]:.1f} %")
""", no_grad=N_("no gradients needed to test"), argmax=N_("the class with the highest score"))

CLASSIFY = IMPORTS + "from PIL import Image\n\n" + SEED + "\n" + NET + LOAD_TRAINED + snippet("""
to_network = transforms.Compose([
    transforms.Resize(32),  # $resize
    transforms.CenterCrop(32),  # $crop
    transforms.ToTensor(),
    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # $same
])
image = Image.open("photo.jpg").convert("RGB")
with torch.no_grad():
    probabilities = net(to_network(image).unsqueeze(0)).softmax(1)[0]  # $ten
for name, p in sorted(zip(classes, probabilities.tolist()), key=lambda pair: -pair[1]):
    print(f"{name:5s} {p:6.1%}")
""", resize=N_("the shorter side to 32 pixels"), crop=N_("the middle 32x32 square"), same=N_("exactly as in training"),
    ten=N_("10 numbers that add up to 1"))
