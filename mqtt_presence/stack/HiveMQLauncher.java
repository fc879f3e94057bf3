// HiveMQ Community Edition for mqtt-presence's local stack, started from its embedded API:
//   java -cp <class path> HiveMQLauncher.java <config folder> <data folder> <extensions folder>
// Prints "HIVEMQ READY" once its listeners are bound; stops cleanly (sessions and queued
// messages written to the data folder) on SIGTERM.
import com.hivemq.embedded.EmbeddedHiveMQ;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public class HiveMQLauncher {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: HiveMQLauncher <config folder> <data folder> <extensions folder>");
            System.exit(2);
        }
        Path extensions = Path.of(args[2]);
        Files.createDirectories(Path.of(args[1]));
        Files.createDirectories(extensions);
        EmbeddedHiveMQ hivemq = EmbeddedHiveMQ.builder()
                .withConfigurationFolder(Path.of(args[0]))
                .withDataFolder(Path.of(args[1]))
                .withExtensionsFolder(extensions)
                .build();
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                hivemq.stop().get(30, TimeUnit.SECONDS);
                hivemq.close();
                System.out.println("HIVEMQ STOPPED");
            } catch (Exception e) {
                System.err.println("HIVEMQ STOP FAILED: " + e);
            }
            System.out.flush();
            stopped.countDown();
        }, "hivemq-stop"));
        try {
            hivemq.start().join();
        } catch (Exception e) {
            System.err.println("HIVEMQ START FAILED: " + e);
            e.printStackTrace();
            Runtime.getRuntime().halt(1);
        }
        System.out.println("HIVEMQ READY");
        System.out.flush();
        stopped.await();
    }
}
