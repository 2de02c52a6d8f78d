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
/// <para>
/// Beside it, a stamp (<c>qubesfirewall-deploy.lock.stamp</c>) that each deployment renews before it lets the lock go.
/// The backend notes the stamp when it reads the inventory; when it takes the lock and the stamp is no longer that one,
/// another session deployed since: what it read is dropped, and the plan made again under the lock reads qubesd anew.
/// So the features this backend knows it wrote itself (forwards piped into one command) are kept only while nobody else
/// deployed.
/// </para>
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

    /// <summary>The stamp each deployment renews (see the class).</summary>
    public string DeploymentStampPath => DeploymentLockPath + ".stamp";

    // the stamp when the cached inventory was read (null: no stamp then)
    private string? _stampAtRead;

    private string? ReadDeploymentStamp()
    {
        try
        {
            return File.Exists(DeploymentStampPath) ? File.ReadAllText(DeploymentStampPath) : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return "unreadable " + Guid.NewGuid().ToString("N"); // never equal: read everything again
        }
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
            var held = FileLock.Acquire(DeploymentLockPath, DeploymentLockTimeout);
            if (ReadDeploymentStamp() != _stampAtRead) Invalidate();
            return new DeploymentGate(this, held);
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

    /// <summary>The lock held; letting it go renews the stamp first (this backend's cache stays valid: it wrote what it knows).</summary>
    private sealed class DeploymentGate(AdminApiBackend backend, FileLock held) : IDisposable
    {
        public void Dispose()
        {
            try
            {
                var stamp = Guid.NewGuid().ToString("N");
                File.WriteAllText(backend.DeploymentStampPath, stamp);
                backend._stampAtRead = stamp;
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                backend.Invalidate(); // the others cannot tell: at least this backend reads again
            }
            finally
            {
                held.Dispose();
            }
        }
    }
}
