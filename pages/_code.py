"""The plain-PyTorch code each page shows in its "PyTorch code" expander, written as the walkthrough writes it.

Every snippet runs as is (those that read CIFAR-10 download it into ./data the first time). They are built from
shared pieces, so the network, the data loading and the imports are written once.
"""

import streamlit as st


def pytorch_code(code: str) -> None:
    """The page's "PyTorch code" expander: a few lines of plain PyTorch doing what the page shows (none when presenting)."""
    from pages._classroom import presenting

    if presenting():
        return
    with st.expander("PyTorch code", icon=":material/code:"):
        st.code(code, language="python")


IMPORTS = """\
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torchvision
import torchvision.transforms as transforms
"""

SEED = """\
torch.manual_seed(0)  # the same seed: the same initial weights and the same shuffles, run after run
classes = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
"""

DATA = """\
# ToTensor: uint8 0..255 -> float 0..1; Normalize(0.5, 0.5): 0..1 -> -1..1, per channel
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
trainset = torchvision.datasets.CIFAR10(root="./data", train=True, download=True, transform=transform)
testset = torchvision.datasets.CIFAR10(root="./data", train=False, download=True, transform=transform)
trainloader = torch.utils.data.DataLoader(trainset, batch_size=4, shuffle=True)
testloader = torch.utils.data.DataLoader(testset, batch_size=4, shuffle=False)
"""

NET = """\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)  # 3x32x32 -> 6x28x28
        self.pool = nn.MaxPool2d(2, 2)  # halves height and width
        self.conv2 = nn.Conv2d(6, 16, 5)  # 6x14x14 -> 16x10x10
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)  # one score (logit) per class

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


net = Net()
"""

LOAD_TRAINED = """\
net.load_state_dict(torch.load("./cifar_net.pth", weights_only=True))  # saved by the Train page's code
net.eval()
"""

OVERVIEW = IMPORTS + "\n" + SEED + """\
print("PyTorch", torch.__version__, "torchvision", torchvision.__version__)
print("GPU available:", torch.cuda.is_available())
"""

DATASET = IMPORTS + "\n" + SEED + "\n" + DATA + """
images, labels = next(iter(trainloader))  # one batch: 4 x 3 x 32 x 32
print(" ".join(f"{classes[label]:5s}" for label in labels))
print("values after Normalize:", images.min().item(), "to", images.max().item())  # about -1 to 1
grid = torchvision.utils.make_grid(images / 2 + 0.5)  # undo Normalize for display: -1..1 -> 0..1
torchvision.utils.save_image(grid, "batch.png")
"""

MODEL = IMPORTS + "\n" + SEED + "\n" + NET + """
print(net)
print(sum(p.numel() for p in net.parameters()), "parameters")  # 62006

criterion = nn.CrossEntropyLoss()  # softmax over the 10 scores, then -log(probability of the true class)
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

images, labels = torch.randn(4, 3, 32, 32), torch.tensor([3, 8, 8, 0])
loss = criterion(net(images), labels)
print("loss before training:", loss.item())  # close to ln(10) = 2.30: every class equally likely
"""

TRAIN = IMPORTS + "\n" + SEED + "\n" + DATA + "\n" + NET + """
criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

for epoch in range(2):  # loop over the dataset twice
    running_loss = 0.0
    for i, (inputs, labels) in enumerate(trainloader):
        optimizer.zero_grad()  # forget the previous step's gradients
        loss = criterion(net(inputs), labels)  # forward
        loss.backward()  # backward: the gradient of the loss for every weight
        optimizer.step()  # a small step against the gradient
        running_loss += loss.item()
        if i % 2000 == 1999:  # print the mean loss every 2000 mini-batches
            print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / 2000:.3f}")
            running_loss = 0.0

torch.save(net.state_dict(), "./cifar_net.pth")
"""

EVALUATE = IMPORTS + "\n" + SEED + "\n" + DATA + "\n" + NET + LOAD_TRAINED + """
correct_pred = {name: 0 for name in classes}
total_pred = {name: 0 for name in classes}
with torch.no_grad():  # no gradients needed to test
    for images, labels in testloader:
        predictions = net(images).argmax(1)  # the class with the highest score
        for label, prediction in zip(labels, predictions):
            correct_pred[classes[label]] += int(label == prediction)
            total_pred[classes[label]] += 1

print(f"Accuracy of the network on the 10000 test images: {100 * sum(correct_pred.values()) // 10000} %")
for name in classes:
    print(f"Accuracy for class: {name:5s} is {100 * correct_pred[name] / total_pred[name]:.1f} %")
"""

CLASSIFY = IMPORTS + "from PIL import Image\n\n" + SEED + "\n" + NET + LOAD_TRAINED + """
to_network = transforms.Compose([
    transforms.Resize(32),  # the shorter side to 32 pixels
    transforms.CenterCrop(32),  # the middle 32x32 square
    transforms.ToTensor(),
    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # exactly as in training
])
image = Image.open("photo.jpg").convert("RGB")
with torch.no_grad():
    probabilities = net(to_network(image).unsqueeze(0)).softmax(1)[0]  # 10 numbers that add up to 1
for name, p in sorted(zip(classes, probabilities.tolist()), key=lambda pair: -pair[1]):
    print(f"{name:5s} {p:6.1%}")
"""
