using System.Globalization;
using System.Runtime.InteropServices;
using QubesFirewall.Engine.Io;

namespace QubesFirewall.Engine.AdminApi;

/// <summary>
/// The live backend's deployment lock: qubesd has none, so two dom0 sessions changing forwards or bindings at once
/// could each read a hook file or the policy file, and the second write would lose the first one's change. A lock
/// file in the user's runtime directory (<c>$XDG_RUNTIME_DIR</c>, else <c>/run/user/&lt;uid&gt;</c>, else a 0700
/// folder of the user's own under the temporary directory), held from the plan made again to the last step, as the
/// offline root holds its own.
/// </summary>
public sealed partial class AdminApiBackend
{
    public const string LockFileName = "qubesfirewall-deploy.lock";

    /// <summary>The lock file; set by the backend selector from the environment (tests point it elsewhere).</summary>
    public string DeploymentLockPath { get; init; } = DefaultLockPath(Environment.GetEnvironmentVariable);

    /// <summary>How long to wait for another session's deployment.</summary>
    public TimeSpan DeploymentLockTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Where the lock file goes for the environment given.</summary>
    public static string DefaultLockPath(Func<string, string?> environment)
    {
        var runtime = environment("XDG_RUNTIME_DIR");
        if (!string.IsNullOrEmpty(runtime) && Path.IsPathFullyQualified(runtime) && Directory.Exists(runtime)) return Path.Combine(runtime, LockFileName);
        var uid = OperatingSystem.IsWindows() ? "0" : geteuid().ToString(CultureInfo.InvariantCulture);
        var userRun = "/run/user/" + uid;
        if (Directory.Exists(userRun)) return Path.Combine(userRun, LockFileName);
        return Path.Combine(Path.GetTempPath(), "qubesfirewall-" + uid, LockFileName);
    }

    [DllImport("libc", SetLastError = false)]
    private static extern uint geteuid();

    public IDisposable LockDeployments()
    {
        var dir = Path.GetDirectoryName(DeploymentLockPath)!;
        try
        {
            if (!Directory.Exists(dir))
            {
                if (OperatingSystem.IsWindows()) Directory.CreateDirectory(dir);
                else Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
            return FileLock.Acquire(DeploymentLockPath, DeploymentLockTimeout);
        }
        catch (IOException ex)
        {
            throw new QubesFirewallException(ErrorIds.DeploymentLocked, FailureKind.ResourceUnavailable,
                $"Another deployment from dom0 has held {DeploymentLockPath} for {DeploymentLockTimeout.TotalMinutes.ToString("0", CultureInfo.InvariantCulture)} minutes (or it cannot be created: {ex.Message}); nothing was changed. Try again when it has finished.", DeploymentLockPath, ex);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new QubesFirewallException(ErrorIds.DeploymentLocked, FailureKind.PermissionDenied,
                $"Cannot create the deployment lock {DeploymentLockPath}: {ex.Message}. Nothing was changed.", DeploymentLockPath, ex);
        }
    }
}
