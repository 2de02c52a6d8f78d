using QubesFirewall.Engine.AdminApi;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Tests.AdminApi;

namespace QubesFirewall.Engine.Tests.Trust;

/// <summary>The live backend's deployment lock: a file in the user's runtime directory, held across processes and sessions.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveDeploymentLockTests : IDisposable
{
    private readonly LiveQubesd _live = new();

    public void Dispose() => _live.Dispose();

    [Fact]
    public void The_lock_file_is_in_the_users_runtime_directory()
    {
        var runtime = Path.Combine(_live.Directory, "runtime");
        Directory.CreateDirectory(runtime);
        Assert.Equal(Path.Combine(runtime, AdminApiBackend.LockFileName), AdminApiBackend.DefaultLockPath(n => n == "XDG_RUNTIME_DIR" ? runtime : null));
        // without XDG_RUNTIME_DIR: /run/user/<uid> when it exists, else a folder of the user's own under the temporary directory
        var fallback = AdminApiBackend.DefaultLockPath(_ => null);
        Assert.EndsWith("/" + AdminApiBackend.LockFileName, fallback);
        Assert.True(fallback.StartsWith("/run/user/", StringComparison.Ordinal) || fallback.StartsWith(Path.GetTempPath(), StringComparison.Ordinal), fallback);
        // a relative or missing runtime directory is not used
        Assert.Equal(fallback, AdminApiBackend.DefaultLockPath(n => n == "XDG_RUNTIME_DIR" ? "relative/dir" : null));
        Assert.Equal(fallback, AdminApiBackend.DefaultLockPath(n => n == "XDG_RUNTIME_DIR" ? Path.Combine(runtime, "missing") : null));
    }

    [Fact]
    public void A_second_session_waits_for_the_first_and_then_is_refused_by_name()
    {
        var lockPath = Path.Combine(_live.Directory, "run", AdminApiBackend.LockFileName);
        var first = new AdminApiBackend(new QubesdClient(_live.Server.SocketPath), _live.QvmRun.Runner) { DeploymentLockPath = lockPath };
        var second = new AdminApiBackend(new QubesdClient(_live.Server.SocketPath), _live.QvmRun.Runner) { DeploymentLockPath = lockPath, DeploymentLockTimeout = TimeSpan.FromMilliseconds(300) };
        using (((IQubesBackend)first).LockDeployments())
        {
            Assert.True(File.Exists(lockPath));
            var ex = Assert.Throws<QubesFirewallException>(() => ((IQubesBackend)second).LockDeployments());
            Assert.Equal("DeploymentLocked", ex.ErrorId);
            Assert.Contains(lockPath, ex.Message);
        }
        using var again = ((IQubesBackend)second).LockDeployments(); // released: the next one gets it
        Assert.NotNull(again);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.GetDirectoryName(lockPath)!) & (UnixFileMode)0x1FF);
    }

    [Fact]
    public void What_a_session_read_is_read_again_under_the_lock_only_when_another_session_deployed_since()
    {
        var lockPath = Path.Combine(_live.Directory, "run", AdminApiBackend.LockFileName);
        var first = new AdminApiBackend(new QubesdClient(_live.Server.SocketPath), _live.QvmRun.Runner) { DeploymentLockPath = lockPath };
        var second = new AdminApiBackend(new QubesdClient(_live.Server.SocketPath), _live.QvmRun.Runner) { DeploymentLockPath = lockPath };
        // another session deploys between this one's plan and its lock: the plan made again under the lock reads qubesd anew
        var planned = first.GetInventory();
        Assert.False(planned.Get("work").Features.ContainsKey("qubesfirewall.forward.tcp.9001"));
        using (((IQubesBackend)second).LockDeployments()) second.SetFeature("work", "qubesfirewall.forward.tcp.9001", "1700000000");
        using (((IQubesBackend)first).LockDeployments())
        {
            var fresh = first.GetInventory();
            Assert.NotSame(planned, fresh);
            Assert.True(fresh.Get("work").Features.ContainsKey("qubesfirewall.forward.tcp.9001"));
            first.SetFeature("work", "qubesfirewall.forward.tcp.9002", "1700000000");
        }
        // nobody else deployed: what it read and what it wrote itself stand, nothing is read again
        var kept = first.GetInventory();
        _live.Server.ClearCalls();
        using (((IQubesBackend)first).LockDeployments())
        {
            Assert.Same(kept, first.GetInventory());
            Assert.True(kept.Get("work").Features.ContainsKey("qubesfirewall.forward.tcp.9002"));
        }
        Assert.Empty(_live.Server.Calls);
        // and the other session, which read before that deployment, reads again
        var old = second.GetInventory();
        using (((IQubesBackend)first).LockDeployments()) { }
        using (((IQubesBackend)second).LockDeployments()) Assert.NotSame(old, second.GetInventory());
    }

    [Fact]
    public void The_backend_selector_gives_the_live_backend_its_lock_from_the_environment()
    {
        var runtime = Path.Combine(_live.Directory, "xdg");
        Directory.CreateDirectory(runtime);
        using var backend = BackendSelector.Open(null, n => n switch
        {
            BackendSelector.SocketVariable => _live.Server.SocketPath,
            "XDG_RUNTIME_DIR" => runtime,
            _ => null,
        });
        Assert.Equal(Path.Combine(runtime, AdminApiBackend.LockFileName), Assert.IsType<AdminApiBackend>(backend).DeploymentLockPath);
    }
}
