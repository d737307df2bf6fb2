import torch, torch.nn as nn, sys
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 8, stride=8)
        self.conv = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 100)
    def forward(self, x):
        y = torch.relu(self.conv(torch.relu(self.stem(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))
torch.manual_seed(0)
torch.jit.trace(Net().eval(), torch.zeros(2, 3, 224, 224)).save(sys.argv[1])
